/* The part of onnxruntime-genai's C API (ort_genai_c.h) that integrations/cpp/slmpack_chat.cpp calls,
 * declared with the signatures of the pinned release (0.18.0), so the test can compile the snippet
 * here and link it against the libonnxruntime-genai.so inside the pinned Python wheel (which ships
 * the library but not the header). Apps compile against the release's own include/ort_genai_c.h. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct OgaResult OgaResult;
typedef struct OgaModel OgaModel;
typedef struct OgaTokenizer OgaTokenizer;
typedef struct OgaSequences OgaSequences;
typedef struct OgaGeneratorParams OgaGeneratorParams;
typedef struct OgaGenerator OgaGenerator;

const char* OgaResultGetError(const OgaResult* result);
void OgaDestroyResult(OgaResult* result);
void OgaDestroyString(const char*);

OgaResult* OgaCreateModel(const char* config_path, OgaModel** out);
void OgaDestroyModel(OgaModel* model);
OgaResult* OgaCreateTokenizer(const OgaModel* model, OgaTokenizer** out);
void OgaDestroyTokenizer(OgaTokenizer*);
OgaResult* OgaTokenizerApplyChatTemplate(const OgaTokenizer*, const char* template_str, const char* messages,
                                         const char* tools, bool add_generation_prompt, const char** out_string);
OgaResult* OgaTokenizerEncode(const OgaTokenizer*, const char* str, OgaSequences* sequences);
OgaResult* OgaTokenizerDecode(const OgaTokenizer*, const int32_t* tokens, size_t token_count,
                              const char** out_string);

OgaResult* OgaCreateSequences(OgaSequences** out);
void OgaDestroySequences(OgaSequences* sequences);
size_t OgaSequencesGetSequenceCount(const OgaSequences* sequences, size_t sequence_index);

OgaResult* OgaCreateGeneratorParams(const OgaModel* model, OgaGeneratorParams** out);
void OgaDestroyGeneratorParams(OgaGeneratorParams* params);
OgaResult* OgaGeneratorParamsSetSearchNumber(OgaGeneratorParams* params, const char* name, double value);
OgaResult* OgaGeneratorParamsSetSearchBool(OgaGeneratorParams* params, const char* name, bool value);

OgaResult* OgaCreateGenerator(const OgaModel* model, const OgaGeneratorParams* params, OgaGenerator** out);
void OgaDestroyGenerator(OgaGenerator* generator);
bool OgaGenerator_IsDone(OgaGenerator* generator);
OgaResult* OgaGenerator_AppendTokenSequences(OgaGenerator* generator, const OgaSequences* p_sequences);
OgaResult* OgaGenerator_GenerateNextToken(OgaGenerator* generator);
size_t OgaGenerator_GetSequenceCount(const OgaGenerator* generator, size_t index);
const int32_t* OgaGenerator_GetSequenceData(const OgaGenerator* generator, size_t index);

#ifdef __cplusplus
}
#endif
