"""Typed errors with stable, registered codes and documented exit codes (standard library only).

Every failure a user can cause or meet is one of these. The CLI prints ``error[CODE]: message``
on one line and exits with the class's exit code:

    0  ok
    1  validation failed (the artifact does not behave like the source model)
    2  bad input or usage (missing/corrupt checkpoint, bad options, existing output, ...)
    3  toolchain failure (a converter or runtime failed on input we accepted)

``ErrorCode`` registers every code. An error built with an unregistered code is a bug and fails
at construction (``ValueError``), so a typo never reaches a user; the README's error table is
tested against this enum (``tests/test_error_codes.py``).
"""
from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    """Every stable error code, with a one-line meaning (the README's table)."""

    def __new__(cls, value: str, meaning: str):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.meaning = meaning
        return obj

    # generic (class defaults)
    E_SLMPACK = "E_SLMPACK", "unclassified slmpack error"
    E_BAD_INPUT = "E_BAD_INPUT", "unusable input (model directory, options or package)"
    E_UNSUPPORTED = "E_UNSUPPORTED", "valid input, unsupported combination (architecture, op, option)"
    E_VALIDATION = "E_VALIDATION", "the package does not match the source model within its tolerance"
    E_TOOLCHAIN = "E_TOOLCHAIN", "a converter or runtime failed on input we accepted"
    E_PACKAGE_INTEGRITY = "E_PACKAGE_INTEGRITY", "package files do not match the manifest's sha256 (changed, missing, extra)"
    E_INTERNAL = "E_INTERNAL", "an unexpected exception (a bug; the message names it)"
    E_INTERRUPTED = "E_INTERRUPTED", "interrupted by the user"
    E_RUNTIME = "E_RUNTIME", "the on-device runner's runtime failed or is missing"
    # checkpoint and model
    E_MODEL_DIR_MISSING = "E_MODEL_DIR_MISSING", "the model directory does not exist"
    E_MODEL_DIR_INVALID = "E_MODEL_DIR_INVALID", "the model path is not a checkpoint directory"
    E_CONFIG = "E_CONFIG", "an option or config field has an invalid value (the message names it)"
    E_CONFIG_INVALID = "E_CONFIG_INVALID", "a config JSON file is invalid: not JSON, too deep, or a value mistyped or out of range"
    E_ARCH_UNSUPPORTED = "E_ARCH_UNSUPPORTED", "config.json names an architecture slmpack does not build"
    E_ROPE_UNSUPPORTED = "E_ROPE_UNSUPPORTED", "the RoPE scaling type is not supported"
    E_WEIGHTS_MISSING = "E_WEIGHTS_MISSING", "no weight files in the checkpoint"
    E_WEIGHTS_CORRUPT = "E_WEIGHTS_CORRUPT", "a weight file or shard index cannot be read"
    E_WEIGHTS_MISMATCH = "E_WEIGHTS_MISMATCH", "config.json and the weights disagree (names or shapes)"
    E_PICKLE_REFUSED = "E_PICKLE_REFUSED", "pickle checkpoint refused without --allow-pickle"
    E_ADAPTER_MISSING = "E_ADAPTER_MISSING", "the --adapter directory or its adapter_model.safetensors does not exist"
    E_ADAPTER_INVALID = "E_ADAPTER_INVALID", "the adapter's config or tensors are not a well-formed PEFT LoRA adapter"
    E_ADAPTER_UNSUPPORTED = "E_ADAPTER_UNSUPPORTED", "the adapter uses a PEFT feature slmpack does not merge (DoRA, biases, embeddings, ...)"
    E_ADAPTER_MISMATCH = "E_ADAPTER_MISMATCH", "the adapter does not fit the base checkpoint (a weight it changes is missing or another shape)"
    E_PATH_UNSAFE = "E_PATH_UNSAFE", "a file name or path leaves its directory (absolute, '..', separators, a link out)"
    E_SYMLINK_REFUSED = "E_SYMLINK_REFUSED", "a model-directory file is a symlink (refused without --follow-symlinks)"
    E_NOT_REGULAR_FILE = "E_NOT_REGULAR_FILE", "a model-directory file is a FIFO, device or directory (refused unopened)"
    E_INPUT_TOO_LARGE = "E_INPUT_TOO_LARGE", "an input JSON or tokenizer file is larger than its limit"
    E_WEIGHTS_NONFINITE = "E_WEIGHTS_NONFINITE", "a weight tensor holds NaN or Inf"
    E_WEIGHTS_DTYPE = "E_WEIGHTS_DTYPE", "a weight's dtype is not what the config implies (e.g. int-labelled floats)"
    E_GGUF_INVALID = "E_GGUF_INVALID", "a .gguf file is malformed (magic, truncation, counts, dims or offsets out of range)"
    E_GGUF_UNSUPPORTED = "E_GGUF_UNSUPPORTED", "a .gguf file uses a tensor type, architecture, tensor or tokenizer slmpack does not read"
    E_GGUF_INEXACT = "E_GGUF_INEXACT", "--quant from-gguf: a tensor's GGUF blocks match no QuantPlan scheme exactly"
    E_TOKENIZER = "E_TOKENIZER", "the tokenizer cannot be loaded"
    E_CHAT_TEMPLATE = "E_CHAT_TEMPLATE", "the chat template cannot render a user/assistant exchange"
    E_EVAL_TEXT = "E_EVAL_TEXT", "the evaluation text is missing or unusable"
    E_TRACE = "E_TRACE", "tracing the reference module failed"
    # output and packages
    E_OUTPUT_EXISTS = "E_OUTPUT_EXISTS", "the output path exists (use --force) or is not a directory"
    E_OUTPUT_UNWRITABLE = "E_OUTPUT_UNWRITABLE", "the output's parent directory is missing or not writable"
    E_OUTPUT_BUSY = "E_OUTPUT_BUSY", "another slmpack run holds the output's lock"
    E_PACKAGE_MISSING = "E_PACKAGE_MISSING", "the package path is not a directory"
    E_PACKAGE_INVALID = "E_PACKAGE_INVALID", "no readable manifest.json (not an slmpack package)"
    E_PACKAGE_SCHEMA = "E_PACKAGE_SCHEMA", "the manifest's schema_version is not the one this slmpack reads"
    E_MANIFEST_INVALID = "E_MANIFEST_INVALID", "a manifest field is missing, mistyped or names a file outside the package"
    E_SAFETENSORS_INVALID = "E_SAFETENSORS_INVALID", "a .safetensors file is malformed (header, dtype, shape or offsets)"
    E_ARTIFACT_MISSING = "E_ARTIFACT_MISSING", "the package's artifact file is missing"
    E_ARTIFACT_INVALID = "E_ARTIFACT_INVALID", "the artifact cannot be loaded by its runtime"
    E_SIGNATURE_INVALID = "E_SIGNATURE_INVALID", "the package's signature is missing or does not verify"
    E_SIGNATURE_KEY = "E_SIGNATURE_KEY", "a signing or verification key is missing or unusable"
    E_SIGNER_MISSING = "E_SIGNER_MISSING", "model_signing is not installed (scripts/bootstrap-sign.sh)"
    # targets
    E_TARGET_UNKNOWN = "E_TARGET_UNKNOWN", "no such target"
    E_TARGET_UNAVAILABLE = "E_TARGET_UNAVAILABLE", "the target is not part of this build of slmpack"
    E_TARGET_NOT_INSTALLED = "E_TARGET_NOT_INSTALLED", "the target's pip extra is not installed (the message is the pip command)"
    E_TARGET_UNSUPPORTED = "E_TARGET_UNSUPPORTED", "the target refuses this model or these options (preflight, before slow work)"
    E_ONNX_EXPORT = "E_ONNX_EXPORT", "torch.onnx export failed"
    E_ONNX_CHECK = "E_ONNX_CHECK", "onnx.checker rejected the model"
    E_ONNX_QUANT_FUSED_MIXED = "E_ONNX_QUANT_FUSED_MIXED", "a fused ONNX projection mixes quantization decisions"
    E_ONNX_QUANT_UNMAPPED = "E_ONNX_QUANT_UNMAPPED", "plan tensors with no ONNX initializer"
    E_EXECUTORCH_EXPORT = "E_EXECUTORCH_EXPORT", "torch.export for ExecuTorch failed"
    E_EXECUTORCH_LOWERING = "E_EXECUTORCH_LOWERING", "ExecuTorch edge lowering / XNNPACK partitioning failed"
    E_EXECUTORCH_EMIT = "E_EXECUTORCH_EMIT", "ExecuTorch program emission failed"
    E_EXECUTORCH_RUN = "E_EXECUTORCH_RUN", "the ExecuTorch runtime failed to run the program"
    E_TFLITE_CONVERT = "E_TFLITE_CONVERT", "LiteRT conversion failed"
    E_TFLITE_FLEX_OP = "E_TFLITE_FLEX_OP", "the converted model needs Flex (TensorFlow) ops"
    E_TFLITE_INVALID = "E_TFLITE_INVALID", "the .tflite flatbuffer fails our structural verifier"
    E_TFLITE_LITERT_VERIFY = "E_TFLITE_LITERT_VERIFY", "LiteRT's verifier rejected the model"
    E_TFLITE_QUANT_ENCODE = "E_TFLITE_QUANT_ENCODE", "the plan has no LiteRT encoding for a tensor"
    E_TFLITE_SIGNATURES = "E_TFLITE_SIGNATURES", "the converted model has unexpected signatures"
    E_COREML_CONVERT = "E_COREML_CONVERT", "Core ML conversion or serialization failed"
    E_COREML_QUANT = "E_COREML_QUANT", "the plan cannot be encoded in Core ML"
    E_COREML_RUNTIME = "E_COREML_RUNTIME", "Core ML cannot run here"
    E_COREML_INTERPRETER = "E_COREML_INTERPRETER", "the MIL interpreter failed"
    E_COREML_OP_UNSUPPORTED = "E_COREML_OP_UNSUPPORTED", "the MIL interpreter has no kernel for an op"
    E_COREML_PACKAGE = "E_COREML_PACKAGE", "the .mlpackage cannot be read"
    # runners
    E_RUNTIME_MISSING = "E_RUNTIME_MISSING", "the format's runtime is not importable"
    E_RUNNER_INPUT = "E_RUNNER_INPUT", "a runner was given an input it cannot take"
    E_RUNNER_POSITION = "E_RUNNER_POSITION", "decode at a position the cache does not hold"
    E_RUNNER_SIGNATURE = "E_RUNNER_SIGNATURE", "the artifact lacks a signature the runner needs"
    E_RUNNER_CHUNK = "E_RUNNER_CHUNK", "a prompt chunk does not fit the program's shapes"
    E_PROMPT_TOO_LONG = "E_PROMPT_TOO_LONG", "the prompt is longer than the program's max prompt"
    E_CONTEXT_OVERFLOW = "E_CONTEXT_OVERFLOW", "the KV cache is full (max context reached)"
    # calibration and quantization
    E_CALIB_CONFIG = "E_CALIB_CONFIG", "a calibration config field is invalid"
    E_CALIB_PATH_MISSING = "E_CALIB_PATH_MISSING", "the calibration data path does not exist"
    E_CALIB_ENCODING = "E_CALIB_ENCODING", "a calibration file is not UTF-8"
    E_CALIB_JSONL_PARSE = "E_CALIB_JSONL_PARSE", "a calibration JSONL line is not valid JSON"
    E_CALIB_JSONL_FIELD = "E_CALIB_JSONL_FIELD", "a calibration JSONL record lacks the text field"
    E_CALIB_TOKENIZER = "E_CALIB_TOKENIZER", "calibration needs a tokenizer the checkpoint lacks"
    E_CALIB_EOS = "E_CALIB_EOS", "the EOS token id for calibration cannot be determined"
    E_CALIB_TOO_FEW_TOKENS = "E_CALIB_TOO_FEW_TOKENS", "the calibration data is shorter than one window"
    E_CALIB_WINDOWS = "E_CALIB_WINDOWS", "the calibration windows have the wrong shape"
    E_CALIB_EMPTY = "E_CALIB_EMPTY", "an algorithm received no calibration inputs"
    E_EVAL_SHAPE = "E_EVAL_SHAPE", "evaluation logits and targets disagree in shape"
    E_GPTQ_HESSIAN = "E_GPTQ_HESSIAN", "GPTQ's Hessian is not positive definite even after damping"
    E_QUANT_SCHEME = "E_QUANT_SCHEME", "a quantization scheme field is invalid"
    E_QUANT_SHAPE = "E_QUANT_SHAPE", "a tensor's shape does not fit its quantization scheme"
    E_QUANT_GROUP_SIZE = "E_QUANT_GROUP_SIZE", "the group size does not divide the input features"
    E_QUANT_AWQ_FOLD = "E_QUANT_AWQ_FOLD", "AWQ scales cannot be folded into the preceding op"
    E_QUANT_SMOOTHQUANT = "E_QUANT_SMOOTHQUANT", "SmoothQuant needs statistics a group lacks"
    E_QUANT_BUDGET = "E_QUANT_BUDGET", "the mixed-precision budget cannot be met"
    E_QUANT_MIXED_UNSUPPORTED = "E_QUANT_MIXED_UNSUPPORTED", "mixed precision is not supported for this recipe"
    E_QUANT_MODEL_LAYOUT = "E_QUANT_MODEL_LAYOUT", "the model lacks modules the recipe expects"
    E_QUANT_NOT_QUANTIZED = "E_QUANT_NOT_QUANTIZED", "asked for integers of a tensor the plan keeps float"
    E_QUANT_PLAN_INVALID = "E_QUANT_PLAN_INVALID", "the QuantPlan is internally inconsistent"
    E_QUANT_PLAN_TENSOR = "E_QUANT_PLAN_TENSOR", "a plan tensor has the wrong shape or dtype"
    E_QUANT_PLAN_SCHEMA = "E_QUANT_PLAN_SCHEMA", "the quant_plan.json schema is not supported"
    E_QUANT_PLAN_CORRUPT = "E_QUANT_PLAN_CORRUPT", "quant_plan.{json,safetensors} are corrupt or disagree"
    E_QUANT_PLAN_MISSING = "E_QUANT_PLAN_MISSING", "--quant-plan names a package without its plan sidecar, or a folder without a plan"
    E_QUANT_PLAN_MISMATCH = "E_QUANT_PLAN_MISMATCH", "a reused plan comes from another checkpoint"
    E_QUANT_PLAN_UNCALIBRATED = "E_QUANT_PLAN_UNCALIBRATED", "the target needs calibration data the plan lacks"
    E_QUANT_TARGET_UNSUPPORTED = "E_QUANT_TARGET_UNSUPPORTED", "the target cannot run the plan (refused before calibration)"
    E_QUANT_ENCODER_UNSUPPORTED = "E_QUANT_ENCODER_UNSUPPORTED", "an encoder export asked for more than the round-to-nearest presets (int8, int4, 8da8w, 8da4w)"
    E_ACCURACY_GATE = "E_ACCURACY_GATE", "the quantized package loses more perplexity vs fp32 than --max-ppl-loss allows"
    E_RECIPE_MISSING = "E_RECIPE_MISSING", "the recipe file does not exist"
    E_RECIPE_PARSE = "E_RECIPE_PARSE", "the recipe TOML cannot be parsed"
    E_RECIPE_PRESET = "E_RECIPE_PRESET", "no such quantization preset"
    E_RECIPE_RULE = "E_RECIPE_RULE", "a recipe rule is invalid"
    # slmpack build (recipes of packages, the cache)
    E_BUILD_RECIPE = "E_BUILD_RECIPE", "slmpack.toml / [tool.slmpack] is invalid (the message names the key)"
    E_BUILD_RECIPE_MISSING = "E_BUILD_RECIPE_MISSING", "no slmpack.toml or [tool.slmpack] table"
    E_BUILD_INPUT = "E_BUILD_INPUT", "a file the recipe names is missing or a symlink leaves its folder"
    E_BUILD_STALE = "E_BUILD_STALE", "build --check: some package is missing or out of date"
    E_BUILD_FAILED = "E_BUILD_FAILED", "some packages of the build failed (each one's error is in the details)"
    E_CACHE_CORRUPT = "E_CACHE_CORRUPT", "a cached package no longer verifies (discarded, never served)"
    E_BUILD_EXECUTOR = "E_BUILD_EXECUTOR", "the Ray cluster cannot be reached, or a package's Ray task died (out of memory, node lost)"
    E_BUILD_RESOURCES = "E_BUILD_RESOURCES", "no node of the Ray cluster has the memory or CPUs a package's export needs (fit estimate)"
    E_BUILD_NODE = "E_BUILD_NODE", "a Ray worker node cannot build for this driver: it does not see the shared cache, or its toolchain differs"
    # devices
    E_DEVICE_UNKNOWN = "E_DEVICE_UNKNOWN", "no such device profile"
    E_PROFILE_INVALID = "E_PROFILE_INVALID", "a device profile file is invalid"
    E_PROFILE_DUPLICATE = "E_PROFILE_DUPLICATE", "two device profiles have the same name"
    E_FIT_BITS = "E_FIT_BITS", "bits per weight out of range"
    E_FIT_CONTEXT = "E_FIT_CONTEXT", "context is not a positive integer"
    E_FIT_TOO_BIG = "E_FIT_TOO_BIG", "the package does not fit the device's memory budget"
    E_TRANSPORT_UNKNOWN = "E_TRANSPORT_UNKNOWN", "no such device transport"
    E_TRANSPORT_MISSING = "E_TRANSPORT_MISSING", "the transport's tool (ssh, adb, ...) is not installed"
    E_DEVICE_UNREACHABLE = "E_DEVICE_UNREACHABLE", "the device cannot be reached"
    E_DEVICE_IO = "E_DEVICE_IO", "copying to or from the device failed"
    E_DEVICE_TIMEOUT = "E_DEVICE_TIMEOUT", "a device command did not finish in time"
    E_DEVICE_VALIDATION = "E_DEVICE_VALIDATION", "a package failed its test on a device"
    E_QEMU_MISSING = "E_QEMU_MISSING", "qemu-aarch64-static is not installed"
    E_QEMU_CPU = "E_QEMU_CPU", "qemu does not emulate the requested CPU"
    E_SYSROOT_BUILD = "E_SYSROOT_BUILD", "building the emulated aarch64 root failed"
    E_ET_RUNTIME_BUILD = "E_ET_RUNTIME_BUILD", "building the torch-free ExecuTorch runtime (libslm_et.so) failed"
    E_DEVICE_RUNTIME_UNAVAILABLE = "E_DEVICE_RUNTIME_UNAVAILABLE", "the device has no runtime for this package's target (Core ML and ExecuTorch encoders on aarch64 Linux)"
    E_REQUIRES_MACOS = "E_REQUIRES_MACOS", "this step needs macOS / Xcode"
    # encoders
    E_PATH_ESCAPE = "E_PATH_ESCAPE", "a path named inside the model directory leads out of it"
    E_POOLING_UNSUPPORTED = "E_POOLING_UNSUPPORTED", "the sentence-transformers pooling mode is not mean, CLS or max"
    E_ENCODER_OUTPUT = "E_ENCODER_OUTPUT", "embed/classify asked of an encoder package with another output"
    E_SEQUENCE_TOO_LONG = "E_SEQUENCE_TOO_LONG", "the input is longer than the encoder's longest signature"

    def __str__(self) -> str:
        return self.value


class SlmpackError(Exception):
    """Base class. ``code`` is a registered ``ErrorCode``; ``message`` is one line for humans."""

    exit_code = 2
    default_code = ErrorCode.E_SLMPACK

    def __init__(self, message: str, code: ErrorCode | str | None = None, *, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = ErrorCode(code) if code is not None else ErrorCode(self.default_code)
        self.details = details or {}

    def to_json(self) -> dict:
        return {"error": self.code.value, "message": self.message, "exit_code": self.exit_code,
                "details": self.details}

    def __str__(self) -> str:  # one line, always
        return f"{self.message}".replace("\n", " ")


class BadInputError(SlmpackError):
    """The user's input (model directory, options, package) is unusable. Exit code 2."""

    exit_code = 2
    default_code = ErrorCode.E_BAD_INPUT


class UnsupportedError(BadInputError):
    """The input is valid but this combination is not supported (architecture, op, quant mode)."""

    default_code = ErrorCode.E_UNSUPPORTED


class ValidationFailed(SlmpackError):
    """The exported artifact does not match the source model within the declared tolerance."""

    exit_code = 1
    default_code = ErrorCode.E_VALIDATION


class ToolchainError(SlmpackError):
    """A converter or runtime failed on input we accepted. Exit code 3."""

    exit_code = 3
    default_code = ErrorCode.E_TOOLCHAIN


class PackageIntegrityError(SlmpackError):
    """A package's files do not match its manifest (changed, missing or extra). Exit code 1."""

    exit_code = 1
    default_code = ErrorCode.E_PACKAGE_INTEGRITY


class TargetNotInstalled(BadInputError):
    """The requested target's toolchain (its pip extra) is not installed. Exit code 2."""

    default_code = ErrorCode.E_TARGET_NOT_INSTALLED


class BuildStale(SlmpackError):
    """``slmpack build --check``: some package is missing or out of date. Exit code 1."""

    exit_code = 1
    default_code = ErrorCode.E_BUILD_STALE


class BuildFailed(SlmpackError):
    """``slmpack build``: some packages failed; exits with the worst of their exit codes."""

    default_code = ErrorCode.E_BUILD_FAILED

    def __init__(self, message: str, exit_code: int, *, details: dict | None = None):
        super().__init__(message, details=details)
        self.exit_code = exit_code


__all__ = ["ErrorCode", "SlmpackError", "BadInputError", "UnsupportedError", "ValidationFailed",
           "ToolchainError", "PackageIntegrityError", "TargetNotInstalled", "BuildStale", "BuildFailed"]
