#!/usr/bin/env bash
# README command (b): set up (incl. Debian packages for the device tests), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --system-tools
bash scripts/bootstrap-sign.sh   # OpenSSF model-signing in its own venv (tests/hardening/test_signing.py)
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
