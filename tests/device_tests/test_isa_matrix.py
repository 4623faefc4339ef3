"""Issue #19: the demo's packages, every quant mode a target with an aarch64 runtime supports, on the
four emulated ARM ISA levels (rpi3: Cortex-A53 Armv8.0, rpi4: A72, rpi5: A76 dotprod/fp16, phone:
qemu max with i8mm/bf16/SVE2).

* ONNX: fp32, int8 and int4 weight-only (fp32 arithmetic on every ISA), 8da4w (MatMulNBits
  accuracy_level 4: int8 activations, whose MLAS kernels differ per ISA: plain NEON on the A53 / A72,
  sdot on the A76, i8mm / SVE on qemu max);
* LiteRT: fp32, int8 and int4 weight-only (INT8 / INT4 + DEQUANTIZE under XNNPACK);
* ExecuTorch (``--et-sdpa decomposed``, run by the torch-free ``libslm_et.so``, see
  ``device_tests/et_runtime.py``): fp32, int8 weight-only (XNNPACK f32-qc8w: fp32 arithmetic) and
  8da4w (XNNPACK qd8-f32-qb4w: int8 activations, kernels chosen per ISA). ExecuTorch refuses int4
  weight-only (XNNPACK has no fp32-activation int4 GEMM).

Every cell must pass its ladder on the device against the x86 host's reference vectors, within the
bound the target declares; greedy tokens must equal the host's wherever the package declares
exactness and are recorded otherwise. Each device reports the CPU it was shown (the profile's fake
/proc/cpuinfo). The run writes the matrix report (report.json ``matrix``, report.md, report.html) with
peak RSS net of an idle Python under the same qemu. Emulated timings mean nothing.
"""
from __future__ import annotations

import json

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.sysroot import _CORES

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

PROFILES = {"rpi3-emulated": "cortex-a53", "rpi4-emulated": "cortex-a72", "rpi5-emulated": "cortex-a76",
            "phone-emulated": "max"}
QUANT = {"onnx": ("int8", "int4", "8da4w"), "tflite": ("int8", "int4"), "executorch": ("int8", "8da4w")}
# what the runtimes' kernel dispatch sees (HWCAP / HWCAP2 from the auxiliary vector, not the fake
# /proc/cpuinfo): the profile's ISA, and no SME on the phone (qemu max has it; the sysroot turns it off)
HWCAPS = {"rpi3-emulated": [], "rpi4-emulated": [], "rpi5-emulated": ["fphp", "asimdhp", "asimddp"],
          "phone-emulated": ["fphp", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16"]}
# weight-only plans (and fp32) compute in fp32 on every ISA: their cells stay at fp32 rounding
FP32_ARITHMETIC = {"fp32", "int8", "int4"}


@pytest.fixture(scope="module")
def demo_packages(request, tmp_path_factory):
    """{target: [(mode, package)]}: the fp32 packages are the session's demo exports."""
    from slmpack import api
    from slmpack.config import ExportConfig
    from slmpack.quantize_config import QuantConfig
    from slmpack.targets.executorch.options import ExecuTorchOptions, Sdpa

    def build(target: str):
        d = tmp_path_factory.mktemp(f"isa-{target}")
        # ExecuTorch on a device: the torch-free runtime has no llama custom-op kernels
        options = ExecuTorchOptions(sdpa=Sdpa.DECOMPOSED) if target == "executorch" else None
        if target == "executorch":
            fp32 = api.export(None, target, d / f"{target}-fp32", ExportConfig(), options)
        else:
            fp32 = request.getfixturevalue(f"demo_{target}_package")
        return [("fp32", fp32)] + [(q, api.export(None, target, d / f"{target}-{q}",
                                                  ExportConfig(quant=QuantConfig(recipe=q)), options))
                                   for q in QUANT[target]]
    return build


@pytest.mark.parametrize("target", ["onnx", "tflite", "executorch"])
def test_every_quant_mode_passes_on_every_isa_level(target, demo_packages, aarch64_sysroot, tmp_path):
    pkgs = demo_packages(target)
    for _, pkg in pkgs:
        assert pkg.passed, pkg.validation
    mode_of = {pkg.path.name: mode for mode, pkg in pkgs}
    assert len(mode_of) == len(pkgs)
    report = run_device_test([p.path for _, p in pkgs], list(PROFILES), out_dir=tmp_path / "report",
                             transport_options={"sysroot": aarch64_sysroot})
    assert len(report.results) == len(pkgs) * len(PROFILES)
    if target == "executorch":   # the torch-free runtime, not executorch.runtime (it needs torch)
        assert all("libslm_et.so" in r.transport_info["executorch_runtime"] for r in report.results)
    for r in report.results:
        assert r.status == "passed", (r.package, r.device, r.reason)
        doc, mode = r.device_json, mode_of[r.package]
        implementer, _, part, _, features = _CORES[PROFILES[r.device]]
        assert doc["machine"]["CPU part"] == part and doc["machine"]["Features"] == features
        assert doc["machine"]["hwcaps"] == HWCAPS[r.device], (r.device, doc["machine"]["hwcaps"])
        # the phone's SVE2 has the 128-bit vectors of a shipping Armv9 core (qemu-user's default: 512)
        assert doc["machine"].get("sve_vector_bytes") == (16 if "sve" in HWCAPS[r.device] else None)
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


def test_encoders_on_every_isa_level(encoder_package, aarch64_sysroot, tmp_path):
    """Issue #19 / #14: an encoder package (mean pooling + Normalize in the graph) of every target with
    an aarch64 runtime, on the four ISA levels; ExecuTorch's through the torch-free runtime."""
    targets = ("onnx", "tflite", "executorch")
    pkgs = [encoder_package("tiny_st", t).path for t in targets]
    report = run_device_test(pkgs, list(PROFILES), out_dir=tmp_path / "report",
                             transport_options={"sysroot": aarch64_sysroot})
    assert len(report.results) == len(pkgs) * len(PROFILES)
    for r in report.results:
        assert r.status == "passed", (r.package, r.device, r.reason)
        assert r.kind == "encoder" and r.checks == {k: True for k in r.checks} and "cosine_ok" in r.checks
        doc = r.device_json
        assert doc["machine"]["CPU part"] == _CORES[PROFILES[r.device]][2]
        assert doc["machine"]["hwcaps"] == HWCAPS[r.device], (r.device, doc["machine"]["hwcaps"])
        assert doc["machine"].get("sve_vector_bytes") == (16 if "sve" in HWCAPS[r.device] else None)
        # fp32 on every ISA: every target declares atol = rtol = 1e-4 for an fp32 encoder
        assert doc["tolerance"] == {"atol": 1e-4, "rtol": 1e-4} and doc["vectors"]["min_cosine"] >= 0.99999
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(saved["matrix"]) == len(report.results)
    assert all(c["max_abs_diff"] is not None and c["max_abs_diff"] <= c["atol"] * 2 for c in saved["matrix"])
    md = (tmp_path / "report" / "report.md").read_text()
    print("\n" + md[md.index("## Matrix"):])
