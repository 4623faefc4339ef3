"""The support matrix, target x {fp32, fp16, int8, int4, 8da4w, 8da8w, w8a8}, as a test.

Each cell's expected result comes from the target's declared capabilities (``capabilities`` +
the named refusals of ``preflight``), which must equal the README's support table; a refused
cell must be refused with a typed error before any slow work (fast grid, every architecture
variant); a supported cell must pass the validation ladder (slow grid, on the Qwen2-style model
with biased q/k/v projections, untied, GQA: the variant whose ExecuTorch int8 export used to
pass preflight and then fail in XNNPACK lowering).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
from slmpack.errors import SlmpackError
from slmpack.exporter.spec import load_spec
from slmpack.targets import registry
from tests.tiny_models import write_tiny_model

TARGETS = ("onnx", "executorch", "tflite", "coreml")
FLOAT = ("fp32", "fp16")
QUANT = ("int8", "int4", "8da4w", "8da8w", "w8a8")
MODES = FLOAT + QUANT
# every input dimension a multiple of 32 (int4 g32 plans), one layer: the architecture deltas
VARIANTS = {
    "qwen2-bias-gqa-untied": dict(family="qwen2", heads=4, kv_heads=2, tied=False),
    "llama-mqa-tied": dict(family="llama", heads=4, kv_heads=1, tied=True),
    "mistral-mha-untied": dict(family="mistral", heads=4, kv_heads=4, tied=False),
}
# random weights: a quant mode's perplexity loss on them says nothing about a trained model, so the
# accuracy gate (tests/quant/test_accuracy_gate.py) is opened; the ladder's numerics still gate
CFG = ExportConfig(trace=TraceConfig(max_context=32, max_prompt=16),
                   validation=ValidationConfig(heldout_tokens=64, greedy_tokens=8, max_ppl_loss=1000.0))
REFUSAL_CODES = {"E_TARGET_UNSUPPORTED", "E_QUANT_PLAN_INVALID", "E_QUANT_TARGET_UNSUPPORTED"}


def options(target: str, mode: str):
    """The options that ask ``target`` for ``mode``; None where its options cannot express it."""
    from slmpack.targets.coreml.options import CoreMLOptions
    from slmpack.targets.executorch.options import ExecuTorchOptions
    from slmpack.targets.onnx.options import OnnxOptions
    from slmpack.targets.tflite.options import TFLiteOptions

    precision = mode if mode in FLOAT else "fp32"
    if target == "onnx":
        return OnnxOptions() if precision == "fp32" else None
    if target == "executorch":
        return ExecuTorchOptions(precision=precision)
    if target == "tflite":
        return TFLiteOptions(prefill_lengths=(8, 16), precision=precision)
    return CoreMLOptions(deployment_target="ios18", compute_precision=precision)


def readme_table() -> dict[tuple[str, str], bool]:
    """The README's "What each target runs" table: (quant preset, target) -> supported."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("What each target runs", 1)[1].split("\n\n", 2)[1]
    rows = [r for r in section.splitlines() if r.startswith("|") and not r.startswith("|---")][1:]
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        presets = re.findall(r"`([^`]+)`", cells[0]) + re.findall(r"\b(8da8w)\b", cells[0])
        for preset in presets:
            for target, cell in zip(TARGETS, cells[1:]):
                out[(preset, target)] = cell.startswith("yes")
    return out


FLOAT_SUPPORT = {("fp32", t): True for t in TARGETS} | {("fp16", "onnx"): False, ("fp16", "executorch"): True,
                                                        ("fp16", "tflite"): True, ("fp16", "coreml"): True}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix")
    # the demo tokenizer (vocab 4096): w8a8 calibrates on text, as a user's export does
    return {name: write_tiny_model(root / name, kw["family"], seed=1, vocab=4096, hidden=64, inter=128, layers=1,
                                   heads=kw["heads"], kv_heads=kw["kv_heads"], tied=kw["tied"], varied=True,
                                   demo_tokenizer=True)
            for name, kw in VARIANTS.items()}


def declared(target_name: str, mode: str, model_dir: Path) -> bool:
    """What the target declares for this cell: its capabilities, then its named refusals."""
    from slmpack.calibration.recipe import preset
    from slmpack.exporter.quantize_stage import model_layout
    from slmpack.calibration.plan import resolve_plan

    opts = options(target_name, mode)
    if opts is None:
        return False
    target = registry.get(target_name)
    caps = target.capabilities(opts)
    if mode in FLOAT:
        return mode in caps.precisions and not target.preflight(load_spec(model_dir), opts)
    if caps.quant is None:
        return False
    spec = load_spec(model_dir)
    layout = model_layout(spec)
    plan = resolve_plan(preset(mode), layout.shapes, embeddings=layout.embeddings, ties=layout.ties)
    try:
        plan.validate_against(layout.shapes, caps.quant)
    except SlmpackError:
        return False
    return not target.preflight(spec, opts, plan)


def test_the_readme_table_covers_every_quant_cell():
    table = readme_table()
    assert set(table) == {(q, t) for q in QUANT for t in TARGETS}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("target", TARGETS)
def test_declared_capabilities_are_the_readme_table(models, target, variant):
    want = readme_table() | FLOAT_SUPPORT
    got = {mode: declared(target, mode, models[variant]) for mode in MODES}
    assert got == {mode: want[(mode, target)] for mode in MODES}


@pytest.fixture
def no_slow_work(monkeypatch):
    import slmpack.exporter.quantize_stage as qs
    import slmpack.exporter.stages as stages

    def boom(*a, **k):
        raise AssertionError("slow work started before the refusal")

    monkeypatch.setattr(stages, "load_state_dict", boom)
    monkeypatch.setattr(stages, "trace_programs", boom)
    monkeypatch.setattr(qs, "load_windows", boom)


CELLS = [(t, m) for t in TARGETS for m in MODES]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("target,mode", [c for c in CELLS if not (readme_table() | FLOAT_SUPPORT)[(c[1], c[0])]])
def test_a_refused_cell_is_refused_by_name_before_slow_work(models, target, mode, variant, tmp_path, no_slow_work):
    opts = options(target, mode)
    if opts is None:   # the target's options cannot even ask for it (ONNX has no fp16 option)
        assert mode not in registry.get(target).capabilities(registry.get(target).options_type()).precisions
        return
    with pytest.raises(SlmpackError) as e:
        api.export(models[variant], target, tmp_path / "out", CFG, opts, quant=mode if mode in QUANT else None)
    assert e.value.code in REFUSAL_CODES and e.value.exit_code == 2, e.value
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("target,mode", [c for c in CELLS if (readme_table() | FLOAT_SUPPORT)[(c[1], c[0])]
                                         and c[1] in QUANT + ("fp16",)])
def test_a_supported_cell_passes_the_ladder(models, target, mode, tmp_path):
    torch.manual_seed(0)
    pkg = api.export(models["qwen2-bias-gqa-untied"], target, tmp_path / "out", CFG, options(target, mode),
                     quant=mode if mode in QUANT else None)
    assert pkg.passed, pkg.validation
    if mode in QUANT:
        assert pkg.manifest["quantization"]["readback_passed"] is True
