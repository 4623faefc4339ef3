"""The accuracy gate (issue 18, point 3): a quantized export whose held-out perplexity exceeds
fp32's by more than ``--max-ppl-loss`` percent fails with exit 1 and ``E_ACCURACY_GATE``, and
says which recipes to try; within budget the same plan passes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def export(model, out, *extra):
    proc = subprocess.run([sys.executable, "-m", "slmpack.cli", "export", str(model), "--target", "onnx",
                           "--quant", "int4", "--calib-windows", "4", "--calib-window-tokens", "64",
                           "--max-context", "64", "--max-prompt", "32", "--out", str(out), "--json", *extra],
                          capture_output=True, text=True, timeout=900)
    docs, text, dec = [], proc.stdout.strip(), json.JSONDecoder()
    while text:  # the export summary, then (on failure) the error document
        doc, end = dec.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    return proc.returncode, docs[-1], proc.stderr


@pytest.mark.slow
def test_gate_refuses_a_plan_over_budget_and_passes_it_within(quant_model, tmp_path):
    rc, doc, err = export(quant_model, tmp_path / "tight", "--max-ppl-loss", "0")
    assert rc == 1, (doc, err[-2000:])
    assert doc["error"] == "E_ACCURACY_GATE" and doc["exit_code"] == 1
    loss = doc["details"]["heldout_fp32"]["perplexity_delta_pct"]
    assert loss > 0 and "exceeds the budget of +0%" in doc["message"]
    assert "gptq" in doc["message"] and "int8" in doc["message"]        # better recipes named
    rc, doc, err = export(quant_model, tmp_path / "loose", "--max-ppl-loss", f"{loss + 1:.3f}")
    assert rc == 0, (doc, err[-2000:])


def test_budget_is_validated():
    from slmpack.config import ValidationConfig
    from slmpack.errors import BadInputError

    assert ValidationConfig().max_ppl_loss == 10.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(BadInputError, match="max_ppl_loss"):
            ValidationConfig(max_ppl_loss=bad)
