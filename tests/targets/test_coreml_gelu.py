"""The tanh GELU through our Core ML lowering (``targets/coreml/lower.py``: ``gelu_tanh``).

coremltools 9 converts torch.export's ``aten.gelu(x, approximate="tanh")`` as the exact GELU (it
reads ``approximate`` only positionally); written out in our decompositions it is fused back into
one ``gelu(TANH_APPROXIMATION)``. Checked on the op and on the numbers, run by the MIL interpreter.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from slmpack.runtime.mil import Interpreter, load_mlpackage  # noqa: E402
from slmpack.targets.coreml import lower  # noqa: E402

MODES = {"tanh": "TANH_APPROXIMATION", "none": "EXACT"}


def _convert(approximate: str, x: torch.Tensor, precision):
    ep = torch.export.export(torch.nn.GELU(approximate=approximate).eval(), (x,))
    with lower.conversion_state():
        return ct.convert(ep.run_decompositions(lower.decompositions()), inputs=[ct.TensorType(shape=x.shape)],
                          convert_to="milinternal", compute_precision=precision,
                          minimum_deployment_target=ct.target.iOS18)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_converts_to_one_op_in_its_mode_and_torchs_values(tmp_path, approximate):
    x = torch.linspace(-6.0, 6.0, 97).reshape(1, 97)
    prog = _convert(approximate, x, ct.precision.FLOAT32)
    ops = [op for op in prog.functions["main"].operations if op.op_type != "const"]
    assert [(op.op_type, op.mode.val) for op in ops] == [("gelu", MODES[approximate])]
    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                       compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS18,
                       skip_model_load=True)
    model.save(str(tmp_path / "gelu.mlpackage"))
    interp = Interpreter(load_mlpackage(tmp_path / "gelu.mlpackage"))
    got = next(iter(interp.run({interp.input_specs[0].name: x.numpy()}).values()))
    want = torch.nn.functional.gelu(x, approximate=approximate).numpy()
    other = torch.nn.functional.gelu(x, approximate="none" if approximate == "tanh" else "tanh").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)
    assert np.abs(got - other).max() > 1e-4     # the two GELUs differ by more than the bound (4.7e-4 here)


def test_fp16_program_keeps_the_tanh_mode():
    prog = _convert("tanh", torch.randn(2, 8), ct.transform.FP16ComputePrecision(op_selector=lower.runs_in_fp16))
    gelus = [op for op in prog.functions["main"].operations if op.op_type == "gelu"]
    assert [op.mode.val for op in gelus] == ["TANH_APPROXIMATION"]
    assert not [op for op in prog.functions["main"].operations if op.op_type in ("tanh", "pow")]
