"""A RMSNorm with no residual add in front (the first layer's) -> ONNX RMSNormalization.

ORT's own SimplifiedLayerNormalization is registered in the *ONNX* domain, which onnx.checker
(ladder step (a)) rejects as an unknown standard op; the standard RMSNormalization exists from
opset 23 on. So this rewrite needs a model opset >= 23 and declines, saying so, below it.

pattern   Mul(scale, Mul(x, Reciprocal(Sqrt(Add(ReduceMean(Pow(x, 2), [-1]), eps)))))
check     as for the skip variant, plus the model's opset
rewrite   RMSNormalization(x, scale, axis=-1, epsilon)
"""
from __future__ import annotations

from slmpack.targets.onnx.fusions._base import OrtFusion, check_rms, rms_pattern, scalar

MIN_OPSET = 23


class FuseRmsNormalization(OrtFusion):
    def __init__(self, opset: int):
        super().__init__()
        self.opset = opset

    def pattern(self, op, x, scale, two, axes, eps):
        return rms_pattern(op, x, scale, two, axes, eps)

    def check(self, context, x, scale, two, axes, eps, mean_sq, **_):
        why = check_rms(self, x, scale, two, axes, eps, mean_sq)
        if why is None and self.opset < MIN_OPSET:
            why = (f"opset {self.opset} < {MIN_OPSET}: no standard RMSNormalization, and ORT's "
                   "SimplifiedLayerNormalization (ONNX domain) fails onnx.checker; left as primitives")
        return self.decline(x, why) if why else True

    def rewrite(self, op, x, scale, eps, **_):
        return op.RMSNormalization(x, scale, axis=-1, epsilon=scalar(eps))


rule = FuseRmsNormalization
