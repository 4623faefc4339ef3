"""Issue #19: the demo's packages, every quant mode a target with an aarch64 runtime supports, on the
four emulated ARM ISA levels (rpi3: Cortex-A53 Armv8.0, rpi4: A72, rpi5: A76 dotprod/fp16, phone:
qemu max with i8mm/bf16/SVE2).

* ONNX: fp32, int8 and int4 weight-only (fp32 arithmetic on every ISA), 8da4w (MatMulNBits
  accuracy_level 4: int8 activations, whose MLAS kernels differ per ISA: plain NEON on the A53 / A72,
  sdot on the A76, i8mm / SVE on qemu max);
* LiteRT: fp32, int8 and int4 weight-only (INT8 / INT4 + DEQUANTIZE under XNNPACK).

Every cell must pass its ladder on the device against the x86 host's reference vectors, within the
bound the target declares; greedy tokens must equal the host's wherever the package declares
exactness and are recorded otherwise. Each device reports the CPU it was shown (the profile's fake
/proc/cpuinfo). The run writes the matrix report (report.json ``matrix``, report.md, report.html) with
peak RSS net of an idle Python under the same qemu. Emulated timings mean nothing. ExecuTorch is not
in the matrix: its Python runtime needs torch, and PyPI's aarch64 torch is a CUDA build.
"""
from __future__ import annotations

import json

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.sysroot import _CORES

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

PROFILES = {"rpi3-emulated": "cortex-a53", "rpi4-emulated": "cortex-a72", "rpi5-emulated": "cortex-a76",
            "phone-emulated": "max"}
QUANT = {"onnx": ("int8", "int4", "8da4w"), "tflite": ("int8", "int4")}
# weight-only plans (and fp32) compute in fp32 on every ISA: their cells stay at fp32 rounding
FP32_ARITHMETIC = {"fp32", "int8", "int4"}


@pytest.fixture(scope="module")
def demo_packages(request, tmp_path_factory):
    """{target: [(mode, package)]}: the fp32 packages are the session's demo exports."""
    from slmpack import api
    from slmpack.config import ExportConfig
    from slmpack.quantize_config import QuantConfig

    def build(target: str):
        fp32 = request.getfixturevalue("demo_onnx_package" if target == "onnx" else "demo_tflite_package")
        d = tmp_path_factory.mktemp(f"isa-{target}")
        return [("fp32", fp32)] + [(q, api.export(None, target, d / f"{target}-{q}",
                                                  ExportConfig(quant=QuantConfig(recipe=q)))) for q in QUANT[target]]
    return build


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_every_quant_mode_passes_on_every_isa_level(target, demo_packages, aarch64_sysroot, tmp_path):
    pkgs = demo_packages(target)
    for _, pkg in pkgs:
        assert pkg.passed, pkg.validation
    mode_of = {pkg.path.name: mode for mode, pkg in pkgs}
    assert len(mode_of) == len(pkgs)
    report = run_device_test([p.path for _, p in pkgs], list(PROFILES), out_dir=tmp_path / "report",
                             transport_options={"sysroot": aarch64_sysroot})
    assert len(report.results) == len(pkgs) * len(PROFILES)
    for r in report.results:
        assert r.status == "passed", (r.package, r.device, r.reason)
        doc, mode = r.device_json, mode_of[r.package]
        implementer, _, part, _, features = _CORES[PROFILES[r.device]]
        assert doc["machine"]["CPU part"] == part and doc["machine"]["Features"] == features
        assert doc["prefill_within_tolerance"] and doc["decode_within_tolerance"]
        if doc["host_greedy"]["declared_exact"]:   # judged: the host's greedy tokens, token for token
            assert r.checks["greedy_match"] is True, (r.package, r.device)
        else:                                      # recorded, not judged
            assert "greedy_match" not in r.checks
        if mode in FP32_ARITHMETIC:
            assert doc["prefill_max_abs_diff"] < 1e-3, (r.package, r.device, doc["prefill_max_abs_diff"])
    feats = {r.device: set(r.device_json["machine"]["Features"].split()) for r in report.results}
    assert "asimddp" not in feats["rpi3-emulated"] and "asimddp" in feats["rpi5-emulated"]
    assert {"i8mm", "sve2", "bf16"} <= feats["phone-emulated"]

    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["ok"] and len(saved["matrix"]) == len(report.results)
    for c in saved["matrix"]:
        assert c["emulated"] and c["status"] == "passed" and c["max_abs_diff"] is not None
        assert 0.0 <= c["agreement"] <= 1.0 and c["atol"] > 0 and c["rtol"] >= 0
        # the emulator's own footprint is measured (an idle Python under that qemu) and taken off
        assert 5 < c["rss_baseline_mb"] < c["peak_rss_mb"]
        assert c["net_rss_mb"] == pytest.approx(c["peak_rss_mb"] - c["rss_baseline_mb"], abs=0.11)
        assert c["fit_needed_mb"] > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Matrix" in md and "timings mean nothing" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "class='matrix'" in html and "max |Δ| per cell" in html
    print("\n" + md[md.index("## Matrix"):])
