#!/usr/bin/env bash
# Create .venv-sign with OpenSSF model-signing (its pydantic/typing-extensions needs conflict with the
# export toolchain's pins, so it gets its own venv). Idempotent. Used by `slmpack sign` / `verify --signature`.
# Also .venv-sign/device-site: just `cryptography` (+ cffi), what a device needs for the on-device runner's
# --require-signature; the device tests put it on the local "device"'s path (tests/device_tests/test_device_signature.py).
set -euo pipefail
cd "$(dirname "$0")/.."
CRYPTOGRAPHY="cryptography==50.0.2"
DEVICE_DEPS="cffi==2.1.1 pycparser==3.12"  # what a device resolves with it; device_tests/sysroot.py pins the same
if ! { [ -x .venv-sign/bin/model_signing ] && .venv-sign/bin/model_signing --help >/dev/null 2>&1; }; then
  python3.11 -m venv .venv-sign
  .venv-sign/bin/python -m pip install -q --disable-pip-version-check "model-signing==1.1.1" "pyopenssl==26.4.0" "$CRYPTOGRAPHY"
fi
if [ ! -f .venv-sign/device-site/.ok ]; then
  rm -rf .venv-sign/device-site
  .venv-sign/bin/python -m pip install -q --disable-pip-version-check --target .venv-sign/device-site "$CRYPTOGRAPHY" $DEVICE_DEPS
  touch .venv-sign/device-site/.ok
fi
