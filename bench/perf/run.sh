#!/usr/bin/env bash
# One command for the performance benchmark (not a test). Extra arguments go to bench.perf.run,
# e.g.  bash bench/perf/run.sh --models demo --threads 1 --reps 3 --no-peers --no-scaling
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m bench.perf.run "$@"
