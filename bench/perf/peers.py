"""Peer artifacts, each built with its own venv under bench/.venvs/ (gitignored):

* optimum   optimum-onnx's ``optimum-cli export onnx --task text-generation-with-past`` (its own
            transformers<4.58 pin), run by the worker's ``ort-genai-io`` backend in onnxruntime;
* llamacpp  llama-cpp-python built from its sdist (``setup_llamacpp``); GGUF written by the
            ``convert_hf_to_gguf.py`` shipped inside that sdist (run with the optimum venv, which
            has torch + transformers), then Q8_0 / Q4_0 by ``llama_model_quantize``.

Every function returns a dict with ``ok`` and either the artifact path or the exact reason it
could not be built here; run.py records that in the results JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("SLMPACK_BENCH_VENVS") or REPO / "bench" / ".venvs")  # e.g. ~/.cache/slmpack/bench-venvs
LLAMACPP_SDIST_VERSION = "0.3.36"


def _py(venv: str) -> Path:
    return VENVS / venv / "bin" / "python"


def _run(cmd: list, timeout: int, env: dict | None = None, cwd=None) -> tuple[int, str, float]:
    t0 = time.time()
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           env={**os.environ, **(env or {})})
        return p.returncode, (p.stdout + p.stderr)[-2000:], time.time() - t0
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout}s", time.time() - t0


def setup_optimum(build: bool = True) -> dict:
    """Create bench/.venvs/optimum (idempotent; a pip install of a few minutes)."""
    if _py("optimum").exists():
        return {"ok": True}
    if not build:
        return {"ok": False, "error": "bench/.venvs/optimum missing: rerun with --build-peers"}
    rc, out, dt = _run(["python3.11", "-m", "venv", VENVS / "optimum"], 120)
    if rc == 0:
        rc, out, dt = _run([_py("optimum"), "-m", "pip", "install", "-q", "torch==2.13.0",
                            "optimum-onnx[onnxruntime]==0.1.0", "transformers<4.58", "onnxruntime==1.32.0"], 1800)
    return {"ok": rc == 0, "install_s": round(dt, 1), **({} if rc == 0 else {"error": out})}


def optimum_export(model_dir: Path, out: Path, build: bool = False) -> dict:
    if (out / "model.onnx").is_file():
        return {"ok": True, "path": str(out / "model.onnx"), "cached": True}
    setup = setup_optimum(build)
    if not setup["ok"]:
        return {"ok": False, "error": f"venv setup failed: {setup.get('error')}"}
    rc, log, dt = _run([VENVS / "optimum" / "bin" / "optimum-cli", "export", "onnx", "--model", model_dir,
                        "--task", "text-generation-with-past", "--framework", "pt", out], 3600)
    if rc != 0 or not (out / "model.onnx").is_file():
        return {"ok": False, "error": log[-800:], "seconds": round(dt, 1)}
    return {"ok": True, "path": str(out / "model.onnx"), "seconds": round(dt, 1)}


def setup_llamacpp(sdist: Path | None = None, build: bool = False) -> dict:
    """Build llama-cpp-python from source into bench/.venvs/llamacpp (idempotent). Only with
    ``build``: on 2 shared cores the build took over an hour (see build_record())."""
    py = _py("llamacpp")
    if py.exists() and _run([py, "-c", "import llama_cpp"], 60)[0] == 0:
        return {"ok": True}
    if not build:
        return {"ok": False, "error": "llama-cpp-python is not built in bench/.venvs/llamacpp (rerun with "
                                      "--build-peers; it compiles llama.cpp from the sdist)", **build_record()}
    if sdist is None:
        dl = VENVS / "_downloads"
        dl.mkdir(parents=True, exist_ok=True)
        rc, out, _ = _run(["pip", "download", "--no-deps", "--no-binary", ":all:", "-d", dl,
                           f"llama-cpp-python=={LLAMACPP_SDIST_VERSION}"], 1200)
        if rc != 0:
            return {"ok": False, "error": f"sdist download failed: {out[-500:]}"}
        sdist = dl / f"llama_cpp_python-{LLAMACPP_SDIST_VERSION}.tar.gz"
    _run(["python3.11", "-m", "venv", VENVS / "llamacpp"], 120)
    env = {"CMAKE_BUILD_PARALLEL_LEVEL": "2",
           "CMAKE_ARGS": "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF "
                         "-DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON"}
    rc, out, dt = _run([py, "-m", "pip", "install", "-q", sdist], 7200, env=env)
    rec = {"ok": rc == 0, "build_s": round(dt, 1), **({} if rc == 0 else {"error": out[-800:]})}
    (VENVS / "llamacpp.build.json").write_text(json.dumps(rec))
    return rec


def _llama_sources(workdir: Path, sdist: Path) -> Path:
    """convert_hf_to_gguf.py + conversion/ + gguf-py/ from the llama-cpp-python sdist."""
    root = workdir / "llama.cpp-convert"
    if not (root / "convert_hf_to_gguf.py").is_file():
        prefix = f"llama_cpp_python-{LLAMACPP_SDIST_VERSION}/vendor/llama.cpp/"
        with tarfile.open(sdist) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(prefix) and (
                m.name == prefix + "convert_hf_to_gguf.py" or m.name.startswith(prefix + "conversion/")
                or m.name.startswith(prefix + "gguf-py/"))]
            for m in members:
                m.name = m.name[len(prefix):]
            tf.extractall(root, members=members, filter="data")
    return root


# run with the optimum venv (torch + transformers): our byte-level BPE tokenizer (tokenizer.json) is
# not in llama.cpp's table of known pre-tokenizers, and the benchmark feeds token ids, so it is
# declared as gpt-2 and read as a BPE vocabulary
_CONVERT = """
import os, runpy, sys
root = sys.argv[1]
sys.path.insert(0, root)
import conversion.base as base
import conversion.llama as llama
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()  # tokenizer.json BPE, no sentencepiece
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
runpy.run_path(os.path.join(root, "convert_hf_to_gguf.py"), run_name="__main__")
"""

_QUANTIZE = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3]); p.nthread = 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def llamacpp_ggufs(model_dir: Path, workdir: Path, name: str, sdist: Path | None, build: bool = False) -> dict:
    """{f32, Q8_0, Q4_0} GGUF files for ``model_dir`` (or the reason they could not be made)."""
    setup = setup_llamacpp(sdist, build)
    if not setup["ok"]:
        return {"ok": False, "error": f"llama-cpp-python could not be built: {setup.get('error')}", **setup}
    if not _py("optimum").exists():
        return {"ok": False, "error": "the GGUF converter needs torch+transformers: bench/.venvs/optimum missing"}
    if sdist is None:
        found = sorted((VENVS / "_downloads").glob("llama_cpp_python-*.tar.gz"))
        if not found:
            return {"ok": False, "error": "the GGUF converter ships in the llama-cpp-python sdist: pass --llamacpp-sdist"}
        sdist = found[-1]
    src = _llama_sources(workdir, sdist)
    out_dir = workdir / "gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    f32 = out_dir / f"{name}-f32.gguf"
    res: dict = {"ok": True, "files": {}}
    if not f32.is_file():
        rc, log, dt = _run([_py("optimum"), "-c", _CONVERT, src, model_dir, "--outfile", f32, "--outtype", "f32"],
                           3600, env={"PYTHONPATH": str(src / "gguf-py")})
        if rc != 0 or not f32.is_file():
            return {"ok": False, "error": f"convert_hf_to_gguf failed: {log[-800:]}"}
        res["convert_s"] = round(dt, 1)
    res["files"]["f32"] = str(f32)
    for q in ("Q8_0", "Q4_0"):
        dst = out_dir / f"{name}-{q}.gguf"
        if not dst.is_file():
            rc, log, _ = _run([_py("llamacpp"), "-c", _QUANTIZE, f32, dst, q], 1800)
            if rc != 0 or not dst.is_file():
                res.setdefault("errors", {})[q] = log[-500:]
                continue
        res["files"][q] = str(dst)
    return res


def build_record() -> dict:
    """What is known about the peer builds (bench/.venvs/<name>.build.json, written by the setups)."""
    rec = {}
    for name in ("optimum", "llamacpp"):
        path = VENVS / f"{name}.build.json"
        if path.is_file():
            rec[f"{name}_build"] = json.loads(path.read_text())
    return rec


def optimum_encoder_export(model_dir: Path, out: Path, build: bool = False) -> dict:
    """``optimum-cli export onnx --task feature-extraction`` of a sentence-transformers directory (the
    optimum venv above, plus sentence-transformers so optimum exports its pooling/normalize modules:
    a ``sentence_embedding`` output)."""
    if (out / "model.onnx").is_file():
        return {"ok": True, "path": str(out / "model.onnx"), "cached": True}
    setup = setup_optimum(build)
    if not setup["ok"]:
        return {"ok": False, "error": f"venv setup failed: {setup.get('error')}"}
    if _run([_py("optimum"), "-c", "import sentence_transformers"], 120)[0] != 0:
        if not build:
            return {"ok": False, "error": "sentence-transformers missing in the optimum venv: rerun with --build-peers"}
        rc, log, _ = _run([_py("optimum"), "-m", "pip", "install", "-q", "sentence-transformers"], 1800)
        if rc != 0:
            return {"ok": False, "error": log[-800:]}
    rc, log, dt = _run([VENVS / "optimum" / "bin" / "optimum-cli", "export", "onnx", "--model", model_dir,
                        "--task", "feature-extraction", "--framework", "pt", out], 3600)
    if rc != 0 or not (out / "model.onnx").is_file():
        return {"ok": False, "error": log[-800:], "seconds": round(dt, 1)}
    return {"ok": True, "path": str(out / "model.onnx"), "seconds": round(dt, 1)}


def versions(venv: str, dists: tuple[str, ...]) -> dict:
    """The installed version of each distribution in a peer venv (recorded with the results)."""
    code = "import importlib.metadata as m, json, sys; print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    rc, out, _ = _run([_py(venv), "-c", code, *dists], 300)
    try:
        return json.loads(out.strip().splitlines()[-1]) if rc == 0 else {"error": out[-300:]}
    except (ValueError, IndexError):
        return {"error": out[-300:]}
