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
