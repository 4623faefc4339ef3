"""The torch-free ExecuTorch runtime (``libslm_et.so`` over the wheel's C++ runtime libraries), on the
host: the same program through it and through ExecuTorch's Python bindings, and the device runner
with torch made unimportable. On emulated ARM devices: tests/device_tests/test_isa_matrix.py."""
from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slmpack import api
from slmpack.device_tests import et_runtime
from slmpack.runtime import safetensors, tolerance
from slmpack.runtime.adapters.executorch import ExecuTorchAdapter
from slmpack.runtime.adapters.executorch_native import NativeExecuTorchAdapter
from slmpack.runtime.errors import BadInputError
from slmpack.runtime.greedy import prefill_all
from slmpack.runtime.manifest import Manifest
from slmpack.targets.executorch.options import ExecuTorchOptions, Sdpa
from tests.device_tests.test_device_runner import run_runner
from tests.targets.test_executorch import CFG, write_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def host_runtime():
    return et_runtime.ensure_et_runtime()   # this machine's arch, against the venv's executorch


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """{sdpa: package} of one random tiny Llama."""
    d = tmp_path_factory.mktemp("et-native")
    model = write_model(d / "model", layers=2)
    return {s: api.export(model, "executorch", d / s.value, CFG, options=ExecuTorchOptions(sdpa=s))
            for s in (Sdpa.DECOMPOSED, Sdpa.CUSTOM)}


def test_the_pin_is_the_lock_files(host_runtime):
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M))
    assert et_runtime.ET_VERSION == pins["executorch"]
    lib = ctypes.CDLL(str(host_runtime.lib))
    lib.slm_et_version.restype = ctypes.c_char_p
    assert lib.slm_et_version().decode() == et_runtime.ET_VERSION
    # RUNPATH $ORIGIN: the directory is self-contained (copy it to a device as it is)
    dyn = subprocess.run(["readelf", "-d", str(host_runtime.lib)], capture_output=True, text=True).stdout
    assert "$ORIGIN" in dyn and "libexecutorch_backend_xnnpack.so" in dyn
    assert sorted(p.name for p in host_runtime.path.glob("*.so")) == sorted([*et_runtime.LIBS, "libslm_et.so"])


def test_same_logits_as_the_python_bindings(packages, host_runtime):
    pkg = packages[Sdpa.DECOMPOSED]
    assert pkg.passed, pkg.validation
    manifest = Manifest.from_json(pkg.manifest)
    vectors = safetensors.load(pkg.path / manifest.test_vectors.file)
    tol = tolerance.checked(manifest)
    m = manifest.model
    native = NativeExecuTorchAdapter(pkg.path / manifest.artifact, m.max_prompt, m.max_context, str(host_runtime.lib))
    python = ExecuTorchAdapter(pkg.path / manifest.artifact, m.max_prompt, m.max_context)
    assert native.runtime_version == et_runtime.ET_VERSION
    prompt = [int(t) for t in vectors["prompt_ids"]]
    for _ in range(2):   # the second round after reset(): a fresh cache, the same numbers
        a, b = prefill_all(native, prompt), prefill_all(python, prompt)
        assert a.shape == b.shape == (len(prompt), 4096)
        np.testing.assert_allclose(a, b, atol=tol.atol, rtol=tol.rtol)
        tok = int(a[-1].argmax())
        for i in range(6):   # decode: same argmax chain, logits within the declared bound
            x, y = native.decode(tok, len(prompt) + i), python.decode(tok, len(prompt) + i)
            np.testing.assert_allclose(x, y, atol=tol.atol, rtol=tol.rtol)
            assert int(x.argmax()) == int(y.argmax())
            tok = int(x.argmax())
        np.testing.assert_allclose(a, vectors["prefill_logits"], atol=tol.atol, rtol=tol.rtol)
        native.reset()
        python.reset()
    with pytest.raises(BadInputError) as exc:   # the kit's position rules hold here too
        native.decode(1, 5)
    assert exc.value.code.value == "E_RUNNER_POSITION"


def test_device_runner_without_torch(packages, host_runtime, monkeypatch):
    """The device runner validates the package through the shim with torch unimportable."""
    monkeypatch.setenv("SLMPACK_ET_LIB", str(host_runtime.lib))   # the runner's subprocess inherits it
    rc, doc = run_runner(packages[Sdpa.DECOMPOSED].path, "--threads", "1")
    assert rc == 0 and doc["ok"], doc
    assert doc["runtime"]["name"] == "executorch" and doc["runtime"]["version"] == et_runtime.ET_VERSION
    assert doc["greedy_match"] and doc["prefill_within_tolerance"] and doc["decode_within_tolerance"]
    # a custom-SDPA program needs the llama custom ops kernels: a typed refusal that says so
    rc, doc = run_runner(packages[Sdpa.CUSTOM].path)
    assert rc == 2 and doc["error"]["code"] == "E_ARTIFACT_INVALID", doc
    assert "OperatorMissing" in doc["error"]["message"] and "--et-sdpa decomposed" in doc["error"]["message"]


def test_a_missing_shim_is_a_typed_error(packages, tmp_path):
    pkg = packages[Sdpa.DECOMPOSED]
    manifest = Manifest.from_json(pkg.manifest)
    with pytest.raises(BadInputError) as exc:
        NativeExecuTorchAdapter(pkg.path / manifest.artifact, 8, 64, str(tmp_path / "libslm_et.so"))
    assert exc.value.code.value == "E_RUNTIME_MISSING" and "SLMPACK_ET_LIB" in str(exc.value)
