"""The traced encoder program: (input_ids, attention_mask[, token_type_ids]) -> one output, with a
dynamic batch and a dynamic sequence length up to the spec's max_sequence."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim, ExportedProgram, export

from slmpack.errors import ToolchainError
from slmpack.exporter.encoder.reference import EncoderReference

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class EncoderProgram(nn.Module):
    """Positional I/O for converters: token_type_ids only when the model has type embeddings."""

    def __init__(self, ref: EncoderReference):
        super().__init__()
        self.ref = ref

    def forward(self, input_ids, attention_mask, *token_type_ids):
        return self.ref(input_ids, attention_mask, token_type_ids[0] if token_type_ids else None)


@dataclass
class EncoderPrograms:
    module: EncoderProgram
    program: ExportedProgram | None
    args: tuple
    dynamic_shapes: tuple | None
    input_names: tuple[str, ...]
    output_name: str
    max_sequence: int
    max_batch: int                 # upper bound of the traced dynamic batch


def example_args(ref: EncoderReference, batch: int, seq: int) -> tuple:
    ids = (torch.arange(batch * seq, dtype=torch.long).reshape(batch, seq) % (ref.spec.vocab_size - 1)) + 1
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2:] = 0  # a padded row, so the mask is not constant-folded
    args = (ids, mask)
    return (*args, torch.zeros_like(ids)) if ref.spec.uses_token_type_ids else args


def trace_encoder(ref: EncoderReference, max_batch: int = 1024, export_program: bool = True) -> EncoderPrograms:
    module = EncoderProgram(ref).eval()
    args = example_args(ref, batch=2, seq=8)
    batch, seq = Dim("batch", min=1, max=max_batch), Dim("sequence", min=2, max=ref.spec.max_sequence)
    dyn = tuple({0: batch, 1: seq} for _ in args)
    names = INPUT_NAMES[:len(args)]
    program = None
    if export_program:
        try:
            with torch.no_grad():
                program = export(module, args, dynamic_shapes=(dyn[0], dyn[1], dyn[2:]) if len(args) > 2 else dyn,
                                 strict=False)
        except Exception as e:  # torch.export raises many types; one line, keep the cause
            raise ToolchainError(f"torch.export of the encoder failed: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}", "E_TRACE") from e
    return EncoderPrograms(module, program, args, dyn, names, ref.spec.output.value, ref.spec.max_sequence,
                           max_batch)
