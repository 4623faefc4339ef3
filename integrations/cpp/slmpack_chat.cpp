// slmpack ONNX package -> one chat turn through onnxruntime-genai's C API (pinned: 0.18.0).
//
//   slmpack_chat PACKAGE_DIR MESSAGES_JSON [MAX_NEW_TOKENS]
//
// Everything the app needs comes from the package slmpack wrote:
//   * genai_config.json   context length (search.max_length), every stop id (eos_token_id list),
//                         model I/O names and KV-cache layout: read by OgaCreateModel;
//   * chat_template.jinja the model's own template, rendered by OgaTokenizerApplyChatTemplate
//                         (the same file slmpack's manifest lists under tokenizer.files);
//   * tokenizer.json      the tokenizer whose ids slmpack certified against Hugging Face's.
// Greedy decoding; prints the generated ids on the first line and the decoded text after it.
// Build against the release's header and library (include/ort_genai_c.h, lib/libonnxruntime-genai.so):
//   c++ -std=c++17 slmpack_chat.cpp -I$GENAI/include -L$GENAI/lib -lonnxruntime-genai -o slmpack_chat
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ort_genai_c.h"

namespace {

void check(OgaResult* result, const char* what) {
  if (result == nullptr) return;
  std::fprintf(stderr, "error: %s: %s\n", what, OgaResultGetError(result));
  OgaDestroyResult(result);
  std::exit(2);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return in ? text.str() : std::string();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PACKAGE_DIR MESSAGES_JSON [MAX_NEW_TOKENS]\n", argv[0]);
    return 2;
  }
  const std::string package = argv[1];
  const char* messages = argv[2];
  const long max_new = argc > 3 ? std::strtol(argv[3], nullptr, 10) : 128;

  OgaModel* model = nullptr;
  check(OgaCreateModel(package.c_str(), &model), "load model");
  OgaTokenizer* tokenizer = nullptr;
  check(OgaCreateTokenizer(model, &tokenizer), "load tokenizer");

  // the package's own template (a base model has none: then genai falls back to tokenizer_config)
  const std::string tmpl = read_file(package + "/chat_template.jinja");
  const char* prompt = nullptr;
  check(OgaTokenizerApplyChatTemplate(tokenizer, tmpl.empty() ? nullptr : tmpl.c_str(), messages, nullptr,
                                      /*add_generation_prompt=*/true, &prompt),
        "apply chat template");

  OgaSequences* sequences = nullptr;
  check(OgaCreateSequences(&sequences), "sequences");
  check(OgaTokenizerEncode(tokenizer, prompt, sequences), "encode");
  const size_t prompt_len = OgaSequencesGetSequenceCount(sequences, 0);

  OgaGeneratorParams* params = nullptr;
  check(OgaCreateGeneratorParams(model, &params), "generator params");
  // max_length counts the prompt; genai caps it at the package's context_length
  check(OgaGeneratorParamsSetSearchNumber(params, "max_length", static_cast<double>(prompt_len + max_new)),
        "max_length");
  check(OgaGeneratorParamsSetSearchBool(params, "do_sample", false), "do_sample");
  OgaGenerator* generator = nullptr;
  check(OgaCreateGenerator(model, params, &generator), "generator");
  check(OgaGenerator_AppendTokenSequences(generator, sequences), "append prompt");
  while (!OgaGenerator_IsDone(generator)) {   // done at a stop id from genai_config or at max_length
    check(OgaGenerator_GenerateNextToken(generator), "generate");
  }

  const size_t total = OgaGenerator_GetSequenceCount(generator, 0);
  const int32_t* ids = OgaGenerator_GetSequenceData(generator, 0);
  std::vector<int32_t> generated(ids + prompt_len, ids + total);
  for (size_t i = 0; i < generated.size(); ++i) std::printf(i ? " %d" : "%d", generated[i]);
  std::printf("\n");
  const char* text = nullptr;
  check(OgaTokenizerDecode(tokenizer, generated.data(), generated.size(), &text), "decode");
  std::printf("%s\n", text);

  OgaDestroyString(text);
  OgaDestroyString(prompt);
  OgaDestroyGenerator(generator);
  OgaDestroyGeneratorParams(params);
  OgaDestroySequences(sequences);
  OgaDestroyTokenizer(tokenizer);
  OgaDestroyModel(model);
  return 0;
}
