#!/usr/bin/env bash
# README command (a): set up, then export the bundled demo model to every target, validate, summarize.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/slmpack export --target all --out out/demo --force "$@"
