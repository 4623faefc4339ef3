"""Weight precision for LiteRT: what a QuantPlan may ask of this target, and how it is encoded.

Two sources of quantization, never mixed in one export:

* ``TFLitePrecision`` recipes (no plan): litert-torch's own recipes, applied to every
  FULLY_CONNECTED / EMBEDDING_LOOKUP weight by ai-edge-quantizer after conversion
  (``recipe_for``). fp16 and weight-only int8 keep fp32 compute; dynamic int8/int4 quantize
  activations at run time.
* a ``QuantPlan`` (calibration/plan.py), passed by the pipeline with programs traced from the
  plan's fake-quant reference: ``encode_plan`` (quant_encode.py) rewrites the converted fp32
  flatbuffer so that each quantized weight is stored as the plan's own integers, found by content
  (sha256 of the fake-quant fp32 bytes; tied embedding / lm_head are one weight). ``readback``
  decodes the written file and compares every integer and scale with the plan.

What the encoder supports today (``capabilities`` + ``unsupported``): symmetric int8 or int4
weights, per-channel or any group size (embeddings too), float activations — the ``int8`` and
``int4`` presets. Stored as an INT8/INT4 per-channel tensor over ``[rows * groups, group]`` +
DEQUANTIZE (+ RESHAPE); bit-exact, the graph computes the fake-quant reference in fp32.
(LiteRT's DEQUANTIZE gives wrong values for BlockwiseQuantization tensors in ai-edge-litert 2.3,
measured, hence the per-channel view of the groups.)

Size cost, measured: quantization parameters belong to *tensors*, and every signature
(prefill_8/32/128, decode) is its own subgraph with its own tensors, so each of the 4 subgraphs
repeats every weight's scales (fp32) and zero points (int64, which LiteRT requires to be as many
as the scales — a single zero point is rejected). Per-channel int8 adds ~48 bytes per output
channel (demo: 4.93 MB vs 3.93 MB expected; ~3% on SmolLM-135M); int4 g32 adds ~44 bytes per group
of 32 weights (demo: 7.38 MB vs 2.90 MB expected). Fewer signatures (``--tflite-prefill-lengths``)
shrink it proportionally; a shared-scale encoding needs either DEQUANTIZE support for
BlockwiseQuantization or dynamic activations (LiteRT's blockwise FULLY_CONNECTED).

Refused before calibration, naming the tensors: asymmetric weights (LiteRT weight zero points must
be 0); static int8 activations (needs a full-integer conversion); dynamic int8 activations. For
the last, quant_encode.py already writes hybrid (int8 per-channel) and blockwise (int4 group)
FULLY_CONNECTED encodings that match numpy on a single FC (per-row *asymmetric* activations is what
XNNPACK computes whatever the model says, so symmetric plans such as ``8da4w`` can never be exact),
but a whole exported model diverges from the activation fake-quant reference (held-out top-1 97.85%
on a tiny model; rows after the first few positions of q_proj differ by up to 0.12; cause not yet
found), so they are not accepted yet. ``_combination_problem`` holds the finer refusals
for when they are.
"""
from __future__ import annotations

from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported
from slmpack.targets.tflite.options import TFLiteOptions, TFLitePrecision

_BLOCK = {TFLitePrecision.DYNAMIC_INT4_BLOCK32: 32, TFLitePrecision.DYNAMIC_INT4_BLOCK128: 128}
GROUP_SIZES = (None, 8, 16, 32, 64, 128, 256)


def capabilities(options: TFLiteOptions | None = None):
    """The QuantPlan features this target encodes (see module docstring)."""
    from slmpack.calibration.plan import TargetQuantCapabilities
    from slmpack.calibration.schemes import ActivationMode

    return TargetQuantCapabilities(
        name="tflite", weight_bits=frozenset({4, 8}), group_sizes=frozenset(GROUP_SIZES), asymmetric_weights=False,
        activation_modes=frozenset({ActivationMode.NONE}),
        embedding_bits=frozenset({4, 8}))


def _combination_problem(d) -> str | None:
    """Why a decision the coarse capabilities allow has no encoding (quant_encode.scheme_of)."""
    from slmpack.calibration.schemes import ActivationMode
    from slmpack.targets.tflite.quant_encode import scheme_of

    w = d.weight
    if w is None or not w.symmetric or d.activation.mode is not ActivationMode.DYNAMIC_INT8 or d.kind != "linear":
        return None
    if d.activation.symmetric:
        return ("symmetric dynamic int8 activations are not encodable: LiteRT's hybrid FULLY_CONNECTED "
                "(XNNPACK) quantizes its input per row asymmetrically; use activation symmetric = false")
    if scheme_of(d) is None:
        return f"no LiteRT kernel runs {w.label} weights with dynamic int8 activations"
    if w.bits == 4 and w.group_size % 32:
        return f"blockwise int4 FULLY_CONNECTED needs a group size that is a multiple of 32, not {w.group_size}"
    return None


def weight_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """Every 2-D weight of the reference module by name (what a QuantPlan is keyed by)."""
    d, f, h, kv, hd = spec.hidden_size, spec.intermediate_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
    out = {"model.embed_tokens.weight": (spec.vocab_size, d), "lm_head.weight": (spec.vocab_size, d)}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (h * hd, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                    p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, h * hd),
                    p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                    p + "mlp.down_proj.weight": (d, f)})
        if not spec.deltas.gated_mlp:  # plain MLP (Phi-2, GPT-2): up/down only
            out.pop(p + "mlp.gate_proj.weight")
        moe = spec.deltas.moe
        if moe is not None:  # experts and router are plain parameters (float); a shared expert is Linear
            for part in ("gate_proj", "up_proj", "down_proj"):
                out.pop(p + f"mlp.{part}.weight")
            if moe.shared_expert_size:
                s, q = moe.shared_expert_size, p + "mlp.shared_expert."
                out.update({q + "gate_proj.weight": (s, d), q + "up_proj.weight": (s, d), q + "down_proj.weight": (d, s)})
    return out


def unsupported(spec: ModelSpec, options: TFLiteOptions, plan=None) -> list[Unsupported]:
    out: list[Unsupported] = []
    block = _BLOCK.get(options.precision)
    if block:
        bad = sorted({n for n, (_, cols) in weight_shapes(spec).items() if cols % block}, key=str)
        if bad:
            out.append(Unsupported("precision", f"{options.precision.value} needs every weight's input dimension "
                                   f"to be a multiple of {block}; {len(bad)} are not (e.g. {bad[0]})"))
    if plan is None:
        return out
    if options.precision is not TFLitePrecision.FP32:
        out.append(Unsupported("precision", f"--tflite-precision {options.precision.value} cannot be combined with "
                               "a QuantPlan (the plan decides every weight's precision)"))
    if plan.quantized_names():
        from slmpack.errors import UnsupportedError

        try:
            plan.validate_against(weight_shapes(spec), capabilities(options))
        except UnsupportedError as e:
            out.append(Unsupported("quantization plan", e.message))
        for name, d in plan.decisions.items():
            why = _combination_problem(d)
            if why:
                out.append(Unsupported(name, why))
    return out


def recipe_for(precision: TFLitePrecision):
    """litert-torch QuantConfig for a precision, or None for fp32."""
    if precision is TFLitePrecision.FP32:
        return None
    from litert_torch.generative.quantize import quant_attrs, quant_recipes

    if precision is TFLitePrecision.FP16:
        return quant_recipes.full_fp16_recipe()
    if precision is TFLitePrecision.WEIGHT_ONLY_INT8:
        return quant_recipes.full_weight_only_recipe()
    if precision is TFLitePrecision.DYNAMIC_INT8:
        return quant_recipes.full_dynamic_recipe()
    granularity = {32: quant_attrs.Granularity.BLOCKWISE_32,
                   128: quant_attrs.Granularity.BLOCKWISE_128}[_BLOCK[precision]]
    return quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4, granularity=granularity)


def encode_plan(data: bytes, plan) -> tuple[bytes, dict]:
    """The plan's integers written into the converted fp32 flatbuffer (quant_encode.encode_plan)."""
    from slmpack.targets.tflite.quant_encode import encode_plan as _encode

    return _encode(data, plan)


def readback(model_path, plan) -> dict:
    """Decode the stored integers / scales of ``model_path`` and compare them with ``plan``."""
    from slmpack.targets.tflite.quant_encode import readback as _readback

    return _readback(model_path, plan)
