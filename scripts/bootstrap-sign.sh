#!/usr/bin/env bash
# Create .venv-sign with OpenSSF model-signing (its pydantic/typing-extensions needs conflict with the
# export toolchain's pins, so it gets its own venv). Idempotent. Used by `slmpack sign` / `verify --signature`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv-sign/bin/model_signing ] && .venv-sign/bin/model_signing --help >/dev/null 2>&1; then exit 0; fi
python3.11 -m venv .venv-sign
.venv-sign/bin/python -m pip install -q --disable-pip-version-check "model-signing==1.1.1" "pyopenssl==26.4.0"
