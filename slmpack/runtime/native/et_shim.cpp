// A torch-free C ABI over ExecuTorch's Module API, for the runtime kit's ctypes binding
// (slmpack/runtime/native_et.py).
//
// ExecuTorch's Python bindings import torch; on a board or phone there is often no torch to import
// (PyPI's aarch64 torch is a CUDA build). This shim links only the runtime libraries that the
// executorch wheel ships torch-free in executorch/lib: libexecutorch (program, Module), the XNNPACK
// backend and the optimized + quantized kernel libraries. Their kernels and backend register from
// static initializers, so the build links them with --no-as-needed.
//
// Programs exported with --et-sdpa decomposed run here. --et-sdpa custom programs call
// llama::custom_sdpa / update_cache, whose kernels PyPI ships only inside a libtorch-linked
// library; loading such a program fails with "missing operator", reported to the caller.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::from_blob;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

struct Handle {
  std::unique_ptr<Module> module;
  std::vector<uint8_t> out;  // the last forward's output bytes
  std::vector<int64_t> shape;
  int dtype = 0;  // 0 float32, 1 float16, 2 bfloat16
};

void set_err(char* err, size_t len, const std::string& msg) {
  if (err && len) std::snprintf(err, len, "%s", msg.c_str());
}

std::string code(Error e) { return executorch::runtime::to_string(e); }

}  // namespace

#ifndef SLM_ET_VERSION
#error "build with -DSLM_ET_VERSION=\"<the executorch wheel's version>\""
#endif

extern "C" {

// The executorch release whose headers and libraries this shim was built against.
const char* slm_et_version() { return SLM_ET_VERSION; }

// Loads the program at `path` (methods load on first use). Returns nullptr and fills `err` on failure.
void* slm_et_load(const char* path, char* err, size_t errlen) {
  auto h = std::make_unique<Handle>();
  h->module = std::make_unique<Module>(path, Module::LoadMode::File);
  // InternalConsistency: the flatbuffer is checked before any of it is trusted (as the Python adapter)
  Error e = h->module->load(executorch::runtime::Program::Verification::InternalConsistency);
  if (e != Error::Ok) {
    set_err(err, errlen, std::string("cannot load the program: ") + code(e));
    return nullptr;
  }
  return h.release();
}

void slm_et_free(void* handle) { delete static_cast<Handle*>(handle); }

// Loads `method` now (load errors such as a missing operator surface here, not mid-run).
int slm_et_load_method(void* handle, const char* method, char* err, size_t errlen) {
  Error e = static_cast<Handle*>(handle)->module->load_method(method);
  if (e != Error::Ok) {
    set_err(err, errlen, std::string("cannot load method ") + method + ": " + code(e));
    return 1;
  }
  return 0;
}

// Runs `method` on `n` int64 tensors: input i has `ranks[i]` dims, taken from shapes[4 * i ...].
// On success the first output is kept in the handle: read its shape with slm_et_out_shape and
// copy its bytes with slm_et_out_copy.
int slm_et_run(void* handle, const char* method, int n, const int64_t* const* data, const int64_t* shapes,
               const int* ranks, char* err, size_t errlen) {
  auto* h = static_cast<Handle*>(handle);
  std::vector<EValue> inputs;
  std::vector<executorch::extension::TensorPtr> keep;  // the tensors must outlive execute()
  for (int i = 0; i < n; ++i) {
    if (ranks[i] < 1 || ranks[i] > 4) {
      set_err(err, errlen, "input rank must be 1..4");
      return 4;
    }
    std::vector<executorch::aten::SizesType> sizes(shapes + 4 * i, shapes + 4 * i + ranks[i]);
    keep.push_back(from_blob(const_cast<int64_t*>(data[i]), sizes, ScalarType::Long));
    inputs.emplace_back(keep.back());
  }
  auto result = h->module->execute(method, inputs);
  if (!result.ok()) {
    set_err(err, errlen, std::string(method) + " failed: " + code(result.error()));
    return 1;
  }
  const auto& outs = result.get();
  if (outs.empty() || !outs[0].isTensor()) {
    set_err(err, errlen, std::string(method) + " returned no tensor");
    return 2;
  }
  const auto& t = outs[0].toTensor();
  switch (t.scalar_type()) {
    case ScalarType::Float: h->dtype = 0; break;
    case ScalarType::Half: h->dtype = 1; break;
    case ScalarType::BFloat16: h->dtype = 2; break;
    default: set_err(err, errlen, "unsupported output dtype"); return 3;
  }
  h->shape.assign(t.sizes().begin(), t.sizes().end());
  const auto* bytes = static_cast<const uint8_t*>(t.const_data_ptr());
  h->out.assign(bytes, bytes + t.nbytes());
  return 0;
}

// Writes up to `cap` dims into `shape`; returns the rank. `dtype` gets the output's dtype code.
int slm_et_out_shape(void* handle, int64_t* shape, int cap, int* dtype) {
  auto* h = static_cast<Handle*>(handle);
  for (int i = 0; i < static_cast<int>(h->shape.size()) && i < cap; ++i) shape[i] = h->shape[i];
  *dtype = h->dtype;
  return static_cast<int>(h->shape.size());
}

// Copies the output bytes; returns the number copied (0 when `cap` is too small).
int64_t slm_et_out_copy(void* handle, void* dst, int64_t cap) {
  auto* h = static_cast<Handle*>(handle);
  if (cap < static_cast<int64_t>(h->out.size())) return 0;
  std::memcpy(dst, h->out.data(), h->out.size());
  return static_cast<int64_t>(h->out.size());
}

}  // extern "C"
