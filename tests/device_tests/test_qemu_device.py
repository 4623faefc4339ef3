"""End to end on an emulated Raspberry Pi 5: the ONNX package validated by onnxruntime for aarch64
under ``qemu-aarch64-static -cpu cortex-a76``. Builds the sysroot once (about 60 MB of downloads)."""
import json
import subprocess

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.sysroot import build_key, cache_root, ensure_sysroot

pytestmark = pytest.mark.qemu


def test_sysroot_is_built_once_and_cached(aarch64_sysroot):
    assert aarch64_sysroot.path == cache_root() / f"sysroot-{build_key()}"
    stamp = aarch64_sysroot.stamp
    assert stamp["check"].startswith("aarch64 1.32.0")
    assert any(w.startswith("onnxruntime-1.32.0-") for w in stamp["wheels"])
    assert any(w.startswith("ai_edge_litert-2.3.0-") for w in stamp["wheels"])
    assert ensure_sysroot() == aarch64_sysroot  # idempotent: the stamp short-circuits
    view = aarch64_sysroot.view("cortex-a76", 4)
    cpuinfo = (view / "proc" / "cpuinfo").read_text()
    assert "CPU part\t: 0xd0b" in cpuinfo and "asimddp" in cpuinfo and cpuinfo.count("processor") == 4
    assert (view / "sys/devices/system/cpu/online").read_text().strip() == "0-3"
    assert (view / "usr" / "bin" / "python3.11").exists()  # through the view's symlinks


def test_python_runs_as_aarch64(aarch64_sysroot):
    argv = aarch64_sysroot.qemu_argv("cortex-a72", 2) + [
        "-c", "import platform, onnxruntime, numpy; print(platform.machine(), onnxruntime.__version__, "
              "open('/proc/cpuinfo').read().count('0xd08'))"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True).stdout.split()
    assert out == ["aarch64", "1.32.0", "2"]


def test_onnx_package_on_emulated_rpi5(aarch64_sysroot, tiny_package, tmp_path):
    report = run_device_test([tiny_package], ["rpi5-emulated"], out_dir=tmp_path / "report",
                             transport_options={"sysroot": aarch64_sysroot})
    (r,) = report.results
    assert r.status == "passed", r.reason
    assert r.transport == "qemu" and r.transport_info["qemu_cpu"] == "cortex-a76"
    doc = r.device_json
    assert doc["machine"]["machine"] == "aarch64" and doc["machine"]["CPU part"] == "0xd0b"
    want = json.loads((tiny_package / "manifest.json").read_text())["runtime"]["min_version"]
    assert doc["runtime"] == {"name": "onnxruntime", "version": "1.32.0", "min_version": want, "version_ok": True}
    assert doc["greedy_match"] and r.checks == {k: True for k in r.checks}
    assert doc["prefill_max_abs_diff"] < 1e-4 and doc["decode_max_abs_diff"] < 1e-4
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["ok"] and saved["results"][0]["device_json"]["greedy_ids"] == doc["greedy_ids"]
    print(f"qemu run: {r.wall_s} s, sysroot {aarch64_sysroot.size_mb()} MB")


def _passes_on_emulated_rpi5(pkg, sysroot, tmp_path):
    """Run ``pkg`` on the emulated Pi 5; it passes there and greedy gives the host reference's tokens."""
    (r,) = run_device_test([pkg.path], ["rpi5-emulated"], out_dir=tmp_path / "report",
                           transport_options={"sysroot": sysroot}).results
    assert r.status == "passed", r.reason
    assert r.device_json["machine"]["machine"] == "aarch64"
    assert r.device_json["greedy_ids"] == pkg.validation["greedy"]["reference_ids"]
    return r


def test_demo_onnx_package_on_emulated_rpi5(aarch64_sysroot, demo_onnx_package, tmp_path):
    """Issue #8 acceptance: the bundled demo model's real ONNX package, validated on the emulated Pi 5."""
    doc = _passes_on_emulated_rpi5(demo_onnx_package, aarch64_sysroot, tmp_path).device_json
    assert doc["prefill_max_abs_diff"] < 1e-4 and doc["decode_max_abs_diff"] < 1e-4


def test_demo_tflite_package_on_emulated_rpi5(aarch64_sysroot, demo_tflite_package, tmp_path):
    """The demo model's real TFLite package, run by ai-edge-litert for aarch64 on the emulated Pi 5."""
    r = _passes_on_emulated_rpi5(demo_tflite_package, aarch64_sysroot, tmp_path)
    doc = r.device_json
    assert doc["target"] == "tflite"
    assert doc["runtime"]["name"] == "ai_edge_litert" and doc["runtime"]["version"] == "2.3.0"
    assert r.checks == {k: True for k in r.checks}
    print(f"qemu tflite run: {r.wall_s} s")


def _on_emulated_rpi5(pkg_dir, sysroot, out):
    (r,) = run_device_test([pkg_dir], ["rpi5-emulated"], out_dir=out, transport_options={"sysroot": sysroot}).results
    return r


RUNTIME = {"onnx": ("onnxruntime", "1.32.0"), "tflite": ("ai_edge_litert", "2.3.0"),
           "executorch": ("executorch", "1.5.1")}   # executorch: the torch-free libslm_et.so


@pytest.mark.parametrize("target", ["onnx", "tflite", "executorch"])
@pytest.mark.parametrize("model", ["tiny_st", "tiny_bert_cls"])
def test_encoder_package_on_emulated_rpi5(model, target, encoder_package, aarch64_sysroot, tmp_path):
    """Issue #14: an encoder package (sentence embeddings with pooling + Normalize / a classification head) runs
    on the emulated Pi 5 with the package's own aarch64 runtime; the device's outputs for the test
    vectors equal the host's torch reference and the host runtime's within the declared tolerance."""
    import numpy as np

    import slmpack
    from slmpack.runtime import safetensors

    pkg = encoder_package(model, target)
    r = _on_emulated_rpi5(pkg.path, aarch64_sysroot, tmp_path / "report")
    assert r.status == "passed", r.reason
    assert r.kind == "encoder" and r.transport == "qemu"
    want_checks = {"identity_ok", "hashes_ok", "runtime_version_ok", "vectors_within_tolerance",
                   "labels_match" if model == "tiny_bert_cls" else "cosine_ok"}
    assert r.checks == {k: True for k in want_checks}
    doc = r.device_json
    assert doc["machine"]["machine"] == "aarch64" and doc["machine"]["CPU part"] == "0xd0b"
    assert (doc["runtime"]["name"], doc["runtime"]["version"]) == RUNTIME[target]
    assert doc["identity"] == slmpack.load(pkg.path).identity and doc["hashes_ok"]
    vectors = safetensors.load(pkg.path / "test_vectors.safetensors")
    want = vectors["expected"]
    got = np.asarray(doc["outputs"], np.float32)
    assert got.shape == want.shape == (8, 32 if model == "tiny_st" else 3)
    bound = 1e-4 + 1e-4 * float(np.abs(want).max())  # every target declares atol = rtol = 1e-4 for fp32 encoders
    assert doc["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}
    assert float(np.abs(got - want).max()) <= bound  # vs the host's torch reference
    host = slmpack.load(pkg.path).backend.run(vectors["input_ids"], vectors["attention_mask"],
                                               vectors.get("token_type_ids"))
    assert float(np.abs(got - host).max()) <= bound  # vs the same package on the host's runtime
    assert abs(doc["vectors"]["max_abs_diff"] - float(np.abs(got - want).max())) <= 1e-6 * bound
    if model == "tiny_bert_cls":
        assert doc["vectors"]["label_agreement"] == 1.0
        assert (got.argmax(-1) == want.argmax(-1)).all() and len(set(want.argmax(-1).tolist())) > 1
    else:  # mean pooling + Normalize inside the graph: unit vectors, the reference's directions
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert doc["vectors"]["min_cosine"] >= 0.99999
    assert doc["peak_rss_mb"] > 0 and doc["rows_per_s"] > 0
    assert r.fit["kind"] == "encoder" and r.fit["batch"] == 8 and r.fit["fits"]
    assert r.fit["run_batch"] == (8 if target == "onnx" else 1)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| label agreement |" in md and f"| {pkg.path.name} | rpi5-emulated | qemu | passed |" in md
    print(f"{model}/{target} on rpi5-emulated: max|Δ| {doc['vectors']['max_abs_diff']:.2e} (bound {bound:.2e}), "
          f"{doc['vectors'].get('min_cosine', doc['vectors'].get('label_agreement'))}, run {doc['run_ms']} ms, "
          f"peak RSS {doc['peak_rss_mb']} MB, wall {r.wall_s} s")


def test_tampered_encoder_package_is_refused_on_emulated_rpi5(encoder_package, aarch64_sysroot, tmp_path):
    """On the device: a changed artifact byte fails the sha256 check (the model is not run); an
    edited tolerance (files re-hashed, so integrity passes) is refused as not the declared one; an
    edited reference output (re-hashed) fails the vectors."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from slmpack.package import MANIFEST, hash_tree, write_json
    from tests.hardening.keys import flip

    src = encoder_package("tiny_bert_cls", "onnx").path

    def variant(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    def rehash(d, **changes):
        m = json.loads((d / MANIFEST).read_text())
        write_json(d / MANIFEST, {**m, **changes, "files": hash_tree(d)})

    flipped = variant("flipped")
    flip(flipped / "model.onnx", (flipped / "model.onnx").stat().st_size // 2)
    r = _on_emulated_rpi5(flipped, aarch64_sysroot, tmp_path / "r1")
    doc = r.device_json
    assert r.status == "failed" and doc["machine"]["machine"] == "aarch64"
    assert doc["error"]["code"] == "E_PACKAGE_INTEGRITY" and doc["hashes_ok"] is False
    assert {"path": "model.onnx", "reason": "sha256 mismatch"} in doc["bad_files"]
    assert doc["outputs"] is None and doc["load_ms"] is None  # never run
    assert r.checks["hashes_ok"] is False and r.checks["vectors_within_tolerance"] is False

    loose = variant("loose")
    rehash(loose, tolerance={"atol": 1e9, "rtol": 0.0})
    r = _on_emulated_rpi5(loose, aarch64_sysroot, tmp_path / "r2")
    assert r.status == "failed" and r.device_json["error"]["code"] == "E_MANIFEST_INVALID"
    assert "tolerance" in r.device_json["error"]["message"]

    wrong = variant("wrong-reference")
    tv = load_file(str(wrong / "test_vectors.safetensors"))
    tv["expected"] = tv["expected"] + np.float32(1e-2)
    save_file(tv, str(wrong / "test_vectors.safetensors"))
    rehash(wrong)
    r = _on_emulated_rpi5(wrong, aarch64_sysroot, tmp_path / "r3")
    doc = r.device_json
    assert r.status == "failed" and doc["hashes_ok"] and doc["error"]["code"] == "E_VALIDATION"
    assert doc["vectors"]["max_abs_diff"] > doc["vectors"]["bound"]
    assert r.checks["identity_ok"] and not r.checks["vectors_within_tolerance"]


@pytest.mark.parametrize("preset", ["int8", "8da8w"])
def test_quantized_encoder_package_on_emulated_rpi5(preset, tiny_bert_cls, aarch64_sysroot, tmp_path):
    """A quantized encoder (the plan's integers: int8 dequantized at load / MatMulNBits with ORT's
    int8 per-block activations, whose aarch64 kernels are not x86's) on the emulated Pi 5: the
    device's outputs are within the tolerance the target declares for that package
    (runtime/tolerance.py ``for_encoder``) of the host's fake-quant reference, labels agree."""
    import numpy as np

    import slmpack
    from slmpack.runtime import safetensors
    from slmpack.runtime.encoder_check import vector_metrics
    from slmpack.runtime.tolerance import ENCODER_PLAN, ENCODER_PLAN_ACT
    from slmpack.targets.base import TargetName

    pkg = slmpack.export(tiny_bert_cls, target="onnx", out=tmp_path / f"q-{preset}", quant=preset)
    assert pkg.validation["vectors"]["passed"], pkg.validation
    r = _on_emulated_rpi5(pkg.path, aarch64_sysroot, tmp_path / "report")
    assert r.status == "passed", r.reason
    tol = (ENCODER_PLAN_ACT if preset == "8da8w" else ENCODER_PLAN)[TargetName.ONNX]
    doc = r.device_json
    assert doc["tolerance"] == {"atol": tol.atol, "rtol": tol.rtol}
    vectors = safetensors.load(pkg.path / "test_vectors.safetensors")
    got = np.asarray(doc["outputs"], np.float32)
    m = vector_metrics("logits", vectors, got, tol)  # + 8da8w's activation slack (runtime/encoder_check.py)
    diff = m["max_abs_diff"]
    assert m["passed"] and diff <= m["bound"], m
    assert m["label_agreement"] == 1.0, m
    print(f"onnx {preset} encoder on rpi5-emulated: max|Δ| vs the x86 fake-quant reference {diff:.2e}")
