"""Per-device harness: profiles, fit check, transports, the on-device runner, harness + report.

Plain functions for the CLI (``slmpack devices``, ``slmpack fit``, ``slmpack device-test``):

    list_profiles(profile_dirs=()) -> list[DeviceProfile]
    fit_check(path, device, context=None, bits=None, *, strict=True) -> FitReport
    run_device_test(packages, devices, transport=None, *, out_dir=None) -> Report
"""
from __future__ import annotations

_EXPORTS = {"list_profiles": "profiles", "get_profile": "profiles", "DeviceProfile": "profiles",
            "fit_check": "fit", "FitReport": "fit", "EncoderFitReport": "fit_encoder", "run_device_test": "harness",
            "DeviceResult": "harness", "Report": "report"}


def __getattr__(name):  # lazy: importing the package must not import numpy or the harness
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
