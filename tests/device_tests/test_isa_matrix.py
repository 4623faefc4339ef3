"""Issue #19: the demo's quantized ONNX packages on the four emulated ARM ISA levels.

int4 (MatMulNBits, fp32 activations) and 8da4w (MatMulNBits accuracy_level 4: int8 activations,
whose MLAS kernels differ per ISA: plain NEON on the A53 / A72, sdot on the A76, i8mm / SVE on
qemu max) on rpi3-, rpi4-, rpi5- and phone-emulated. Every cell must pass its ladder on the device
against the x86 host's reference vectors, within the bound the target declares; greedy tokens are
judged only where the target declares exactness (neither plan here), and recorded otherwise. Each
device reports the CPU it was shown (the profile's fake /proc/cpuinfo). Emulated timings mean
nothing."""
from __future__ import annotations

import json

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.sysroot import _CORES

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

PROFILES = {"rpi3-emulated": "cortex-a53", "rpi4-emulated": "cortex-a72", "rpi5-emulated": "cortex-a76",
            "phone-emulated": "max"}


@pytest.fixture(scope="module")
def quantized_demo(tmp_path_factory):
    from slmpack import api
    from slmpack.config import ExportConfig
    from slmpack.quantize_config import QuantConfig

    d = tmp_path_factory.mktemp("isa")
    return [api.export(None, "onnx", d / f"onnx-{q}", ExportConfig(quant=QuantConfig(recipe=q))) for q in ("int4", "8da4w")]


def test_quantized_packages_pass_on_every_isa_level(quantized_demo, aarch64_sysroot, tmp_path):
    for pkg in quantized_demo:
        assert pkg.passed, pkg.validation
    report = run_device_test([p.path for p in quantized_demo], list(PROFILES), out_dir=tmp_path / "report",
                             transport_options={"sysroot": aarch64_sysroot})
    assert len(report.results) == 2 * len(PROFILES)
    lines = []
    for r in report.results:
        assert r.status == "passed", (r.package, r.device, r.reason)
        doc = r.device_json
        implementer, _, part, _, features = _CORES[PROFILES[r.device]]
        assert doc["machine"]["CPU part"] == part and doc["machine"]["Features"] == features
        bound = doc["tolerance"]["atol"]
        assert doc["prefill_within_tolerance"] and doc["decode_within_tolerance"]
        assert "greedy_match" not in r.checks  # neither plan is declared greedy-exact on ONNX
        g = doc["host_greedy"]
        assert g["declared_exact"] is False and g["tokens"] == 32
        lines.append(f"{r.package:12s} {r.device:15s} prefill {doc['prefill_max_abs_diff']:.2e} "
                     f"decode {doc['decode_max_abs_diff']:.2e} (atol {bound:g}) greedy "
                     f"{'match' if g['match'] else 'from token %s' % g['first_divergence']}")
    feats = {r.device: set(r.device_json["machine"]["Features"].split()) for r in report.results}
    assert "asimddp" not in feats["rpi3-emulated"] and "asimddp" in feats["rpi5-emulated"]
    assert {"i8mm", "sve2", "bf16"} <= feats["phone-emulated"]
    # int4 computes in fp32 on every ISA: its cells stay at fp32 rounding, far inside its bound
    for r in report.results:
        if r.package.endswith("int4"):
            assert r.device_json["prefill_max_abs_diff"] < 1e-3, (r.device, r.device_json["prefill_max_abs_diff"])
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["ok"] and len(saved["results"]) == 8
    assert "from token" in (tmp_path / "report" / "report.md").read_text() or all(
        r.device_json["host_greedy"]["match"] for r in report.results)
    print("\n" + "\n".join(lines))
