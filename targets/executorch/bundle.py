"""model.bpte: the program plus reference test cases in ExecuTorch's BundledProgram format, so a
device can check itself with ExecuTorch's own bundled-IO API (``BundledModule``: load a case's
inputs, execute, verify the outputs) without Python or slmpack.

The cases are stateful and must run in order on one freshly loaded method: case 0 prefills
``PROMPT`` tokens at positions 0..P-1, cases 1..D decode the reference's greedy continuation one
token at a time. The target declares the prompt (``request``); the pipeline runs the reference
(the package's own, fake-quant for a quantized package) and the bundle stores its logits; a
device checks them with the package's declared tolerance (manifest ``tolerance``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slmpack.targets.base import ReferenceRequest, ReferenceTrace

PROMPT, DECODE = 8, 4
METHOD = "forward"


def request(vocab_size: int, max_prompt: int) -> ReferenceRequest:
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab_size, min(PROMPT, max_prompt), dtype=np.int64)
    return ReferenceRequest("bundle", tuple(int(t) for t in prompt), greedy_steps=DECODE)


def test_cases(trace: ReferenceTrace) -> list[tuple[tuple, torch.Tensor]]:
    v = trace.prefill_logits.shape[-1]

    def t(x) -> torch.Tensor:  # a fresh contiguous tensor (numpy's new axes have stride 0)
        return torch.tensor(np.asarray(x, dtype=np.float32)).reshape(1, -1, v)

    prompt = torch.tensor(trace.request.prompt, dtype=torch.long)
    cases = [((prompt.reshape(1, -1), torch.arange(len(prompt))), t(trace.prefill_logits))]
    for i, (tok, logits) in enumerate(zip(trace.decode_ids, trace.decode_logits)):
        cases.append(((torch.tensor([[tok]]), torch.tensor([len(prompt) + i])), t(logits[None])))
    return cases


def write_bundle(pte: Path, trace: ReferenceTrace, path: Path) -> str:
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    cases = [MethodTestCase(inputs=list(inp), expected_outputs=[out]) for inp, out in test_cases(trace)]
    bundle = BundledProgram(None, pte_file_path=str(pte),
                            method_test_suites=[MethodTestSuite(method_name=METHOD, test_cases=cases)])
    path.write_bytes(serialize_from_bundled_program_to_flatbuffer(bundle))
    return path.name


def verify_bundle(path: Path, atol: float, rtol: float) -> int:
    """Run every bundled case in order through ExecuTorch's bundled-module API (what a device
    harness calls: load the case's inputs, execute, compare with the expected outputs); raises
    RuntimeError on a mismatch. Returns the number of cases checked."""
    from executorch.extension.pybindings import portable_lib as rt

    from slmpack.targets.executorch.source_transforms.custom_sdpa import load_custom_ops

    load_custom_ops()
    bundle = rt._load_bundled_program_from_buffer(Path(path).read_bytes())
    n = 1 + DECODE
    for i in range(n):
        bundle.verify_result_with_bundled_expected_output(METHOD, i, rtol, atol)
    return n
