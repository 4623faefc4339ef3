#!/usr/bin/env python3
"""On-device runner: validate and time one slmpack package (schema v1) on the machine it runs on.

Standalone on purpose: it is copied to the device and needs only the Python standard library,
numpy and the package format's runtime (onnxruntime; ai_edge_litert or tflite_runtime; ...).
It must never import slmpack, torch or safetensors.

    python3 device_runner.py PKG_DIR [--threads N] [--max-new-tokens 32] [--out result.json]

Steps: verify the sha256 of every file the manifest lists (and that nothing else is there), load
the artifact with the format's adapter, compare prefill and per-token decode logits with the
package's test vectors under the manifest's tolerance, run greedy generation from the reference
prompt, time it (time to first token, prefill tok/s, decode tok/s) and read peak RSS.
Exactly one JSON document is printed to stdout (native libraries' own prints go to stderr).
Exit codes follow slmpack's: 0 ok, 1 validation failed, 2 bad input, 3 runtime failure.

Adapters implement the Runner protocol shared with host validation:
``prefill(ids) -> logits[S, V]``, ``decode(token, pos) -> logits[V]``, ``reset()``.
Add a format by writing one class and decorating it with ``@register_adapter("<target>")``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path

import numpy as np

RUNNER_VERSION = 1
SCHEMA_VERSION = 1
EXIT = {"E_VALIDATION": 1, "E_PACKAGE_INTEGRITY": 1, "E_BAD_INPUT": 2, "E_RUNTIME": 3}


class RunnerError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- safetensors (stdlib + numpy)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?",
              "BF16": "<u2"}


def read_safetensors(path) -> dict:
    """Parse a .safetensors file: u64 LE header length, JSON header, then raw little-endian data."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise RunnerError("E_BAD_INPUT", f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise RunnerError("E_BAD_INPUT", f"{path}: header length {n} exceeds the file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunnerError("E_BAD_INPUT", f"{path}: bad safetensors header ({exc})") from None
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise RunnerError("E_BAD_INPUT", f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        shape, (start, end) = list(info["shape"]), info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if not 0 <= start <= end <= len(body) or end - start != count * np.dtype(dtype).itemsize:
            raise RunnerError("E_BAD_INPUT", f"{path}: tensor {name} has bad data_offsets")
        arr = np.frombuffer(body[start:end], dtype=dtype, count=count).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.copy()
    return out


# ---------------------------------------------------------------- package integrity
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(pkg: Path, manifest: dict) -> list:
    """Problems as [{"path", "reason"}]: changed, missing, unsafe or unexpected files."""
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        return [{"path": "manifest.json", "reason": "no 'files' table"}]
    bad = []
    for rel in sorted(listed):
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts:
            bad.append({"path": rel, "reason": "unsafe path"})
            continue
        f = pkg / rel
        if not f.is_file():
            bad.append({"path": rel, "reason": "missing"})
        elif sha256_file(f) != str(listed[rel]).lower():
            bad.append({"path": rel, "reason": "sha256 mismatch"})
    for f in sorted(p for p in pkg.rglob("*") if p.is_file()):
        rel = f.relative_to(pkg).as_posix()
        if rel != "manifest.json" and rel not in listed:
            bad.append({"path": rel, "reason": "not in manifest"})
    return bad


# ---------------------------------------------------------------- adapters (Runner protocol)
ADAPTERS: dict = {}


def register_adapter(target: str):
    def deco(cls):
        if target in ADAPTERS:
            raise RuntimeError(f"adapter for {target!r} already registered ({ADAPTERS[target].__name__})")
        ADAPTERS[target] = cls
        return cls
    return deco


class Adapter:
    """Loads one package's artifact. Subclasses set ``runtime_name``/``runtime_version`` and
    implement ``prefill(ids) -> logits [S, V] float32`` (cache reset first), ``decode(token, pos)
    -> logits [V] float32`` and ``reset()``. (No ``abc`` here: the runner imports only what a
    device has, and the interface is small enough to state.)"""

    runtime_name = "?"
    runtime_version = "?"

    def __init__(self, pkg: Path, manifest: dict, threads: int = 0):
        self.pkg, self.manifest, self.threads = pkg, manifest, threads
        self.model = manifest.get("model", {})


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32}


@register_adapter("onnx")
class OnnxAdapter(Adapter):
    """onnxruntime-genai I/O naming: input_ids/attention_mask/position_ids + past_key_values.{i}.*"""

    def __init__(self, pkg, manifest, threads=0):
        super().__init__(pkg, manifest, threads)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError("E_RUNTIME", f"onnxruntime is not importable: {exc}") from None
        self.runtime_name, self.runtime_version = "onnxruntime", ort.__version__
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(pkg / manifest["artifact"]), so,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.layers = sum(1 for n in self.inputs if n.startswith("past_key_values.") and n.endswith(".key"))
        if "input_ids" not in self.inputs or "logits" not in self.outputs:
            raise RunnerError("E_BAD_INPUT", "model.onnx lacks input_ids/logits (onnxruntime-genai naming)")
        kv_in = self.inputs.get("past_key_values.0.key", np.float32)
        self.kv_shape = (1, int(self.model["num_kv_heads"]), 0, int(self.model["head_dim"]))
        self.kv_dtype = kv_in
        self.reset()

    def reset(self):
        empty = np.zeros(self.kv_shape, dtype=self.kv_dtype)
        self.past = [(empty, empty) for _ in range(self.layers)]

    def _step(self, ids) -> np.ndarray:
        past_len = self.past[0][0].shape[2] if self.layers else 0
        n = len(ids)
        feeds = {"input_ids": np.asarray([ids], dtype=self.inputs["input_ids"])}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, past_len + n), dtype=self.inputs["attention_mask"])
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(past_len, past_len + n, dtype=self.inputs["position_ids"])[None]
        for i, (k, v) in enumerate(self.past):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = k, v
        out = dict(zip(self.outputs, self.session.run(None, feeds)))
        self.past = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(self.layers)]
        return np.asarray(out["logits"][0], dtype=np.float32)

    def prefill(self, ids):
        self.reset()
        return self._step([int(t) for t in ids])

    def decode(self, token, pos):
        past_len = self.past[0][0].shape[2] if self.layers else pos
        if pos != past_len:
            raise RunnerError("E_RUNTIME", f"decode at position {pos} but the cache holds {past_len}")
        return self._step([int(token)])[-1]


def import_tflite_interpreter():
    """LiteRT's module (ai_edge_litert) or its predecessor's (tflite_runtime), whichever exists."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            mod = __import__(module, fromlist=["Interpreter"])
            dist = module.split(".")[0]
            version = getattr(sys.modules.get(dist), "__version__", None) or _dist_version(dist)
            return mod.Interpreter, dist, version
        except ImportError:
            continue
    raise RunnerError("E_RUNTIME", "neither ai_edge_litert nor tflite_runtime is importable")


def _dist_version(module: str) -> str:
    try:
        from importlib.metadata import version
        return version(module.replace("_", "-"))
    except Exception:  # noqa: BLE001 - version is informational
        return "?"


@register_adapter("tflite")
class TFLiteAdapter(Adapter):
    """LiteRT signatures as targets/tflite writes them: fixed-length ``prefill_<n>`` and a
    one-token ``decode``; inputs ``tokens`` int32 [1,S] and ``input_pos`` int32 [S], the KV cache
    as ``kv_cache_{k,v}_<i>`` [1, kv_heads, max_context, head_dim] in and out; output ``logits``.

    Same semantics as targets/tflite/runner.py: a chunk of s tokens runs through the smallest
    ``prefill_<n>`` with n >= s whose rows fit (pos + n <= max_context, since LiteRT clamps an
    out-of-range DYNAMIC_UPDATE_SLICE start); else the largest fitting one, else ``decode``.
    Padded rows get token 0 and the positions after the chunk; later steps overwrite them."""

    DECODE = "decode"
    PREFILL_PREFIX = "prefill_"

    def __init__(self, pkg, manifest, threads=0):
        super().__init__(pkg, manifest, threads)
        interpreter_cls, self.runtime_name, self.runtime_version = import_tflite_interpreter()
        self._data = (pkg / manifest["artifact"]).read_bytes()  # the interpreter keeps a view of it
        try:
            self.interpreter = interpreter_cls(model_content=self._data, num_threads=threads or None)
        except ValueError as exc:  # LiteRT's flatbuffer verifier / model builder
            raise RunnerError("E_BAD_INPUT", f"LiteRT rejected the model: {str(exc).splitlines()[0]}") from None
        sigs = self.interpreter.get_signature_list()
        self.lengths = sorted(int(k[len(self.PREFILL_PREFIX):]) for k in sigs
                              if k.startswith(self.PREFILL_PREFIX) and k[len(self.PREFILL_PREFIX):].isdigit())
        if self.DECODE not in sigs or not self.lengths:
            raise RunnerError("E_BAD_INPUT", "the .tflite needs a 'decode' and at least one 'prefill_<n>' "
                              f"signature, has {sorted(sigs)}")
        self._prefill = {n: self.interpreter.get_signature_runner(f"{self.PREFILL_PREFIX}{n}")
                         for n in self.lengths}
        self._decode = self.interpreter.get_signature_runner(self.DECODE)
        self._cache_specs = self._read_cache_specs(self._decode.get_input_details())
        self.max_context = int(self._cache_specs["kv_cache_k_0"][0][2])
        self.reset()

    @staticmethod
    def _read_cache_specs(details: dict) -> dict:
        """{name: (shape, dtype)} of the cache inputs, ordered by layer then k/v."""
        names = sorted((k for k in details if k.startswith("kv_cache_")),
                       key=lambda k: (int(k.rsplit("_", 1)[1]), k))
        if "kv_cache_k_0" not in names or not {"tokens", "input_pos"} <= set(details):
            raise RunnerError("E_BAD_INPUT", f"decode signature inputs {sorted(details)} lack "
                              "tokens/input_pos/kv_cache_k_0")
        return {k: (tuple(int(d) for d in details[k]["shape"]), details[k]["dtype"]) for k in names}

    def reset(self):
        self.cache = {k: np.zeros(shape, dtype) for k, (shape, dtype) in self._cache_specs.items()}
        self.pos = 0

    def _pick(self, left: int) -> int:
        """Signature length for the next chunk with ``left`` tokens to go (1 = decode)."""
        fits = [n for n in self.lengths if n <= self.max_context - self.pos]
        covering = [n for n in fits if n >= left]
        if covering:
            return covering[0]
        full = [n for n in fits if n <= left]
        return full[-1] if full else 1

    def _run(self, runner, ids: np.ndarray, length: int) -> np.ndarray:
        """One signature call: ``ids`` padded to ``length`` rows; the cache and pos advance."""
        n = len(ids)
        tokens = np.zeros((1, length), np.int32)
        tokens[0, :n] = ids
        positions = np.arange(self.pos, self.pos + length, dtype=np.int32)
        out = runner(tokens=tokens, input_pos=positions, **self.cache)
        self.cache = {k: out[k] for k in self._cache_specs}
        self.pos += n
        return np.asarray(out["logits"][0, :n], dtype=np.float32)

    def prefill(self, ids):
        """Reset, then run the whole prompt in chunks (longer prompts than the largest signature
        are split exactly as slmpack's greedy reference splits them: by the largest length)."""
        self.reset()
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > self.max_context:
            raise RunnerError("E_BAD_INPUT", f"prompt of {len(ids)} exceeds max context {self.max_context}")
        out, done = [], 0
        while done < len(ids):
            length = self._pick(len(ids) - done)
            runner = self._decode if length == 1 and 1 not in self.lengths else self._prefill[length]
            out.append(self._run(runner, ids[done:done + length], length))
            done += min(length, len(ids) - done)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def decode(self, token, pos):
        if pos != self.pos:
            raise RunnerError("E_RUNTIME", f"decode at position {pos} but the cache holds {self.pos}")
        if pos >= self.max_context:
            raise RunnerError("E_BAD_INPUT", f"position {pos} exceeds max context {self.max_context}")
        return self._run(self._decode, np.array([int(token)]), 1)[0]


@register_adapter("coreml")
class CoreMLAdapter(Adapter):
    """macOS only: coremltools.models.MLModel.predict with the iOS 18 stateful KV cache
    (make_state()); the package's I/O (targets/coreml/names.py): tokens int32 [1, S], input_pos
    int32 [S] -> logits [1, S, V]. Not run here (no Mac)."""

    def __init__(self, pkg, manifest, threads=0):
        super().__init__(pkg, manifest, threads)
        if platform.system() != "Darwin":
            raise RunnerError("E_RUNTIME", "Core ML models run only on macOS/iOS")
        if (manifest.get("kv_cache") or {}).get("kind") != "state":
            raise RunnerError("E_RUNTIME", "the device runner runs Core ML packages with a state KV cache "
                                           "(iOS 18 / macOS 15 deployment target) only")
        import coremltools as ct
        self.runtime_name, self.runtime_version = "coremltools", ct.__version__
        self.mlmodel = ct.models.MLModel(str(pkg / manifest["artifact"]))
        self.reset()

    def reset(self):
        self.state, self.pos = self.mlmodel.make_state(), 0

    def _step(self, ids):
        feeds = {"tokens": np.asarray([ids], dtype=np.int32),
                 "input_pos": np.arange(self.pos, self.pos + len(ids), dtype=np.int32)}
        out = self.mlmodel.predict(feeds, state=self.state)
        self.pos += len(ids)
        return np.asarray(out["logits"][0], dtype=np.float32)

    def prefill(self, ids):
        self.reset()
        return self._step([int(t) for t in ids])

    def decode(self, token, pos):
        return self._step([int(token)])[-1]


# ---------------------------------------------------------------- measurement
def machine_info() -> dict:
    info = {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("CPU implementer", "CPU part", "Features", "model name") and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    return info


def peak_rss_mb():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1), "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (2**20 if sys.platform == "darwin" else 1024), 1), "ru_maxrss"
    except (ImportError, OSError):
        return None, None


def _version_tuple(v: str):
    return tuple(int(p) if p.isdigit() else 0 for p in str(v).replace("-", ".").split(".")[:3])


def _compare(got: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> dict:
    if got.shape != ref.shape:
        raise RunnerError("E_VALIDATION", f"logits shape {got.shape} != reference {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "within_tolerance": bool(np.all(diff <= atol + rtol * np.abs(ref))),
            "top1_agreement": float(np.mean(got.argmax(-1) == ref.argmax(-1))) if got.size else 1.0}


def _eos_set(model: dict) -> set:
    eos = model.get("eos_token_id")
    return set(int(e) for e in eos) if isinstance(eos, list) else ({int(eos)} if eos is not None else set())


def validate(pkg: Path, threads: int = 0, max_new_tokens: int = 32) -> dict:
    result = {"ok": False, "runner_version": RUNNER_VERSION, "package": pkg.name, "target": None,
              "runtime": None, "machine": machine_info(), "hashes_ok": None, "bad_files": [],
              "prefill_max_abs_diff": None, "decode_max_abs_diff": None,
              "prefill_within_tolerance": None, "decode_within_tolerance": None,
              "prefill_top1_agreement": None, "decode_top1_agreement": None, "greedy_ids": None,
              "greedy_match": None, "load_ms": None, "ttft_ms": None, "prefill_tok_s": None,
              "decode_tok_s": None, "peak_rss_mb": None, "rss_source": None, "error": None}
    try:
        manifest = json.loads((pkg / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunnerError("E_BAD_INPUT", f"cannot read {pkg / 'manifest.json'}: {exc}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise RunnerError("E_BAD_INPUT", f"manifest schema_version {manifest.get('schema_version')!r} "
                          f"is not {SCHEMA_VERSION}")
    result["target"] = target = manifest.get("target")
    bad = verify_files(pkg, manifest)
    result["hashes_ok"], result["bad_files"] = not bad, bad
    if bad:  # never execute an artifact that is not the one the manifest describes
        result["error"] = {"code": "E_PACKAGE_INTEGRITY", "message": f"{len(bad)} file(s) do not match the manifest"}
        return result
    if target not in ADAPTERS:
        why = " (ExecuTorch on a device needs a torch-free aarch64 ExecuTorch runtime; not built yet)" \
            if target == "executorch" else ""
        raise RunnerError("E_BAD_INPUT", f"no adapter for target {target!r}; have {sorted(ADAPTERS)}{why}")
    t0 = time.perf_counter()
    adapter = ADAPTERS[target](pkg, manifest, threads)
    result["load_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    want = (manifest.get("runtime") or {}).get("min_version")
    result["runtime"] = {"name": adapter.runtime_name, "version": adapter.runtime_version,
                         "min_version": want,
                         "version_ok": not want or _version_tuple(adapter.runtime_version) >= _version_tuple(want)}
    tv = read_safetensors(pkg / "test_vectors.safetensors")
    tol = manifest.get("tolerance") or {}
    atol, rtol = float(tol.get("atol", 1e-4)), float(tol.get("rtol", 0.0))
    max_ctx = int(adapter.model.get("max_context") or 1 << 30)
    prompt, decode_ids = tv["prompt_ids"].astype(np.int64), tv["decode_ids"].astype(np.int64)
    if len(prompt) + len(decode_ids) > max_ctx:
        raise RunnerError("E_BAD_INPUT", "test vectors exceed the model's max_context")

    pre = _compare(adapter.prefill(prompt), tv["prefill_logits"], atol, rtol)
    rows = [adapter.decode(int(t), len(prompt) + j) for j, t in enumerate(decode_ids)]
    dec = _compare(np.stack(rows) if rows else np.zeros((0, 0), np.float32),
                   tv["decode_logits"].reshape(len(rows), -1) if rows else np.zeros((0, 0), np.float32),
                   atol, rtol)
    for stage, cmp in (("prefill", pre), ("decode", dec)):
        result[f"{stage}_max_abs_diff"] = cmp["max_abs_diff"]
        result[f"{stage}_within_tolerance"] = cmp["within_tolerance"]
        result[f"{stage}_top1_agreement"] = cmp["top1_agreement"]

    greedy_prompt, eos = tv["greedy_prompt_ids"].astype(np.int64), _eos_set(adapter.model)
    max_new = min(max_new_tokens, max_ctx - len(greedy_prompt))
    t0 = time.perf_counter()
    token = int(np.argmax(adapter.prefill(greedy_prompt)[-1]))
    t1 = time.perf_counter()
    generated = [token]
    while len(generated) < max_new and token not in eos:
        token = int(np.argmax(adapter.decode(token, len(greedy_prompt) + len(generated) - 1)))
        generated.append(token)
    t2 = time.perf_counter()
    ref = [int(t) for t in tv["greedy_ids"]]
    result.update({
        "greedy_ids": generated, "greedy_match": generated == ref,
        "ttft_ms": round((t1 - t0) * 1e3, 3),
        "prefill_tok_s": round(len(greedy_prompt) / max(t1 - t0, 1e-9), 2),
        "decode_tok_s": round((len(generated) - 1) / (t2 - t1), 2) if len(generated) > 1 else None})
    result["peak_rss_mb"], result["rss_source"] = peak_rss_mb()
    result["ok"] = bool(pre["within_tolerance"] and dec["within_tolerance"] and result["greedy_match"]
                        and result["runtime"]["version_ok"])
    if not result["ok"]:
        result["error"] = {"code": "E_VALIDATION", "message": "device outputs differ from the test vectors"}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", help="also write the JSON document to this file")
    args = ap.parse_args(argv)
    stdout_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the runtimes print goes to stderr; stdout carries only our JSON
    try:
        result = validate(Path(args.package), args.threads, args.max_new_tokens)
        code = 0 if result["ok"] else 1
    except RunnerError as exc:
        result, code = {"ok": False, "error": {"code": exc.code, "message": exc.message},
                        "machine": machine_info()}, EXIT.get(exc.code, 3)
    except Exception as exc:  # noqa: BLE001 - report any runtime failure as JSON
        result, code = {"ok": False, "error": {"code": "E_RUNTIME", "message": f"{type(exc).__name__}: {exc}"},
                        "machine": machine_info()}, 3
    text = json.dumps(result, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.stdout.flush()
    os.dup2(stdout_fd, 1)
    os.write(1, (text + "\n").encode())
    return code


if __name__ == "__main__":
    sys.exit(main())
