#!/usr/bin/env bash
# README command (b): set up (incl. Debian packages for the device tests), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --system-tools
bash scripts/bootstrap-sign.sh   # OpenSSF model-signing in its own venv (tests/hardening/test_signing.py)
# workers: min(cores, 2) unless SLMPACK_TEST_WORKERS says otherwise (each worker may peak at ~6 GB
# during an ExecuTorch or real-model export, so more workers need more memory than CPUs)
workers="${SLMPACK_TEST_WORKERS:-$(( $(nproc) < 2 ? $(nproc) : 2 ))}"
set +e
if [ "$workers" -gt 1 ]; then
    .venv/bin/python -m pytest -n "$workers" "$@"
else
    .venv/bin/python -m pytest "$@"
fi
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
