"""Residual add + RMSNorm -> com.microsoft SkipSimplifiedLayerNormalization.

pattern   s = Add(a, b); Mul(scale, Mul(s, Reciprocal(Sqrt(Add(ReduceMean(Pow(s, 2), [-1]), eps)))))
          with s also used further on (the residual stream)
check     exponent 2; reduction over the last axis with keepdims; constant eps; constant scale of
          the hidden size; [batch, sequence, hidden] float input
rewrite   y, _, _, s' = SkipSimplifiedLayerNormalization(a, b, scale, epsilon) (s' = a + b, the 4th
          output, replaces every other use of s)
"""
from __future__ import annotations

from slmpack.targets.onnx.fusions._base import MS_DOMAIN, OrtFusion, check_rms, rms_pattern, scalar


class FuseSkipSimplifiedLayerNorm(OrtFusion):
    def pattern(self, op, a, b, scale, two, axes, eps):
        s = op.Add(a, b, _outputs=["s"])
        return rms_pattern(op, s, scale, two, axes, eps), s

    def check(self, context, a, b, s, scale, two, axes, eps, mean_sq, **_):
        why = check_rms(self, s, scale, two, axes, eps, mean_sq)
        if why is None and any(v.shape is None or v.shape.rank() != 3 or v.shape[-1] != s.shape[-1] for v in (a, b)):
            why = "the two addends are not both [batch, sequence, hidden] (broadcast add)"
        return self.decline(s, why) if why else True

    def rewrite(self, op, a, b, scale, eps, **_):
        y, _mean, _inv_std, s = op.SkipSimplifiedLayerNormalization(
            a, b, scale, epsilon=scalar(eps), _domain=MS_DOMAIN, _outputs=4)
        return y, s


rule = FuseSkipSimplifiedLayerNorm
