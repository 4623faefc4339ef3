"""What every fit report (decoder ``fit.FitReport``, encoder ``fit_encoder.EncoderFitReport``) does
with its numbers."""
from __future__ import annotations

from dataclasses import asdict

from slmpack.errors import BadInputError


class FitVerdict:
    """What every fit report does with its numbers (a mixin of the frozen report dataclasses)."""

    def to_json(self) -> dict:
        return asdict(self)

    def raise_if_too_big(self):
        if not self.fits:
            raise BadInputError(f"does not fit: {self.message()}", code="E_FIT_TOO_BIG", details=self.to_json())
        return self
