"""Quantized encoder packages through the decoders' QuantPlan (``--quant int8|int4|8da8w|8da4w``).

The same machinery as decoders, in order:

1. ``preflight``  the preset, translated to the encoder module's tensor names (``ENCODER_PRESETS``),
                  resolved over the weight shapes and validated against the target's declared
                  ``capabilities`` (and ExecuTorch's XNNPACK limits), before any weight is read;
2. ``build``      ``calibration.build_plan`` on the fp32 encoder (RTN: no calibration text), then
                  the fake-quant reference: the same module holding the plan's dequantized
                  weights (bf16-rounded group scales where XNNPACK stores them so), which is
                  what gets traced. Each target then encodes the plan's *integers* natively
                  (targets/<t>/encoder.py ``lower_encoder(..., plan=)``);
3. the ladder     test vectors from that reference (+ the runtime's declared activation
                  quantization, ``Target.executed_quant``) within the target's tolerance, and the
                  held-out sentences against the *fp32* reference: the issue's quantized bounds
                  (``ladder.QUANTIZED``: cosine mean >= 0.99, min >= 0.98, top-5 agreement >= 95%).

Encoders have no calibration text contract (``model(ids) -> logits``), so only round-to-nearest
presets are offered; GPTQ / AWQ, static int8 activations (``w8a8``), recipe files, budgets and a
reused plan are refused with ``E_QUANT_ENCODER_UNSUPPORTED``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from slmpack.errors import UnsupportedError
from slmpack.quantize_config import QuantConfig

EMBEDDINGS = ("word.weight", "pos.weight", "tok_type.weight")
SUPPORTED = ("int8", "int4", "8da8w", "8da4w")
# measured 2026-12-02 (litert-torch, all-MiniLM-L6-v2 and the tiny BERTs): the converted model holds
# o / fc2 / the embeddings verbatim, but not the weights that read a LayerNorm's output (q / k / v,
# fc1): the converter folds the LayerNorm's scale into them (a max(x, -3e38) barrier before fc1 keeps
# fc1 verbatim; q / k / v are rewritten further, not yet understood), so they cannot carry the plan's
# integers
TFLITE_FOLDED = ("litert-torch rewrites the weights that read a LayerNorm's output (q/k/v/fc1: the LayerNorm "
                 "scale is folded in), so the plan's integers cannot be stored exactly; quantized LiteRT encoders "
                 "are not supported yet")


def encoder_presets() -> dict:
    """The decoder presets' names over the encoder's tensors, with int8 *group-wise* (32) weights:
    on all-MiniLM-L6-v2 (real weights, the bundled held-out sentences, measured 2026-12-02) per-channel
    int8 round-to-nearest keeps cosine 0.9994 but only 89% top-5 neighbour agreement (one per-channel
    ``v`` projection alone drops it to 92%: outlier weights), int8 g32 keeps 95.4%."""
    from slmpack.calibration.recipe import A8_DYNAMIC, W4_G32, W8_PC, Recipe, Rule
    from slmpack.calibration.schemes import Algorithm, WeightScheme

    w8 = WeightScheme(bits=8, group_size=32, symmetric=True, algorithm=Algorithm.RTN)
    embed = tuple(Rule(n, w8, fallback=W8_PC) for n in EMBEDDINGS)
    return {
        "int8": Recipe("int8", (Rule("*", w8, fallback=W8_PC),)),
        "int4": Recipe("int4", (*embed, Rule("layers.*", W4_G32, fallback=W8_PC), Rule("head_*", w8, fallback=W8_PC))),
        "8da8w": Recipe("8da8w", (*embed, Rule("layers.*", w8, A8_DYNAMIC, W8_PC),
                                  Rule("head_*", w8, A8_DYNAMIC, W8_PC))),
        "8da4w": Recipe("8da4w", (*embed, Rule("layers.*", W4_G32, A8_DYNAMIC, W8_PC),
                                  Rule("head_*", W4_G32, A8_DYNAMIC, W8_PC))),
    }


def _refuse(why: str) -> UnsupportedError:
    return UnsupportedError(f"quantized encoder: {why} (encoders take the round-to-nearest presets "
                            f"{', '.join(SUPPORTED)})", "E_QUANT_ENCODER_UNSUPPORTED")


@dataclass(frozen=True)
class EncoderQuantPreflight:
    config: QuantConfig
    recipe: object          # calibration.recipe.Recipe
    plan: object            # decisions only
    target: object          # the decoder Target of the same name (capabilities, executed_quant)
    options: object         # that target's options for encoders


def layout(spec):
    from slmpack.calibration.build_plan import model_weights
    from slmpack.exporter.encoder.reference import EncoderReference

    with torch.device("meta"):
        _, shapes, embeds, ties = model_weights(EncoderReference(spec))
    return shapes, embeds, ties


def preflight(spec, encoder_target, qcfg: QuantConfig) -> EncoderQuantPreflight | None:
    """Resolve and validate the plan's decisions; ``None`` for a float export."""
    from slmpack.calibration.plan import resolve_plan
    from slmpack.targets.registry import get

    if not qcfg.enabled:
        return None
    if qcfg.plan_from is not None:
        raise _refuse("--quant-plan (a reused plan) is not supported")
    if qcfg.has_budget:
        raise _refuse("a mixed-precision budget (--max-ppl-increase / --max-size) needs decoder perplexity")
    if qcfg.algorithm is not None and qcfg.algorithm.value != "rtn":
        raise _refuse(f"--algorithm {qcfg.algorithm.value} needs calibration text through a decoder")
    if qcfg.recipe not in SUPPORTED:
        raise _refuse(f"--quant {qcfg.recipe!r} is not an encoder preset")
    recipe = encoder_presets()[qcfg.recipe]
    target = get(encoder_target.name)
    options = encoder_target.options()
    shapes, embeds, ties = layout(spec)
    plan = resolve_plan(recipe, shapes, embeddings=embeds, ties=ties)
    plan.validate_against(shapes, target.capabilities(options).quant)
    problems = target_problems(encoder_target.name.value, plan, options)
    if problems:
        raise UnsupportedError(f"target {encoder_target.name.value} cannot run this plan: {problems[0]}",
                               "E_QUANT_TARGET_UNSUPPORTED", details={"problems": problems})
    return EncoderQuantPreflight(qcfg, recipe, plan, target, options)


def target_problems(target: str, plan, options) -> list[str]:
    """Limits finer than ``capabilities`` (shape- and combination-dependent), per target."""
    if target == "executorch":  # XNNPACK: int8 weight-only, 8da8w, 8da4w (no int4 weight-only GEMM)
        from slmpack.targets.executorch.quantize import plan_problems

        found = plan_problems(plan, None, options)
    elif target == "onnx":      # MatMulNBits / GatherBlockQuantized block sizes
        from slmpack.targets.onnx.quantize import unsupported

        found = unsupported(None, options, plan)
    elif target == "tflite":
        return [f"{n}: {TFLITE_FOLDED}" for n in plan.quantized_names() if plan.decisions[n].kind == "linear"][:1]
    else:                       # Core ML: its capabilities say it all
        found = []
    return [f"{u.what}: {u.reason}" for u in found]


@dataclass
class EncoderQuant:
    plan: object            # calibrated QuantPlan
    recipe: object
    reference: torch.nn.Module   # the fake-quant encoder (traced)
    executed: object        # targets.base.ExecutedQuant

    @property
    def has_activations(self) -> bool:
        from slmpack.calibration.schemes import ActivationMode

        return any(d.activation.mode is not ActivationMode.NONE for d in self.plan.decisions.values())


def build(pre: EncoderQuantPreflight, ref) -> EncoderQuant:
    """Round-to-nearest plan on the fp32 encoder and its fake-quant reference (``ref`` unchanged)."""
    from slmpack.calibration.build_plan import build_plan
    from slmpack.exporter.fake_quant import bf16_scale_weights

    plan = build_plan(ref, pre.recipe, torch.zeros((0, 0), dtype=torch.long), capabilities=pre.target.capabilities(
        pre.options).quant)
    fq = copy.deepcopy(ref)
    fq.load_state_dict(plan.fake_quant_state_dict(ref.state_dict()), strict=True)
    executed = pre.target.executed_quant(pre.options, plan)
    bf16_scale_weights(fq, plan, executed.bf16_scales)
    for p in fq.parameters():
        p.requires_grad_(False)
    return EncoderQuant(plan, pre.recipe, fq.eval(), executed)


def validation_reference(quant: EncoderQuant):
    """A context manager: the fake-quant encoder computing the runtime's activation quantization."""
    from slmpack.exporter.fake_quant import activation_fake_quant

    return activation_fake_quant(quant.reference, quant.plan, quant.executed)
