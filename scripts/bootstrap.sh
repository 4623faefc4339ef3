#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned toolchain. Idempotent: reinstalls only when
# pyproject.toml, setup.py or constraints.txt changed. Usage: scripts/bootstrap.sh [--system-tools]
#   --system-tools  also install the Debian packages the device tests use (qemu-user-static,
#                   openssh-server/client, g++-aarch64-linux-gnu for the torch-free ExecuTorch
#                   runtime, device_tests/et_runtime.py); needs root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

if [ "${1:-}" = "--system-tools" ]; then
  need=()
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null || need+=(openssh-client)
  command -v g++ >/dev/null || need+=(g++)
  command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "bootstrap: installing Debian packages: ${need[*]}" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

stamp="$(cat pyproject.toml setup.py constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat .venv/.slmpack-stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
echo "bootstrap: creating .venv with the pinned toolchain of every target (first run takes a few minutes;" \
     "pip's output goes to .venv/bootstrap.log)" >&2
"$PY" -m venv .venv
log=.venv/bootstrap.log
pipi() { .venv/bin/python -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 \
  || { echo "bootstrap: pip install failed; last lines of $log:" >&2; tail -n 20 "$log" >&2; exit 3; }; }
pipi --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
# torch==2.13.0 resolves to the CPU wheel (see ../shared/TOOLCHAIN.md); constraints.txt locks the rest.
# [all] = every target's toolchain (a user who wants one target: pip install 'slmpack[onnx]'); [ray] = the
# Ray executor of `slmpack build` (+263 MB), so the slow tier runs tests/build/test_ray.py.
pipi -c constraints.txt -e ".[all,test,ray]"
.venv/bin/python -c "import slmpack.cli, torch, onnxruntime, executorch, coremltools, ai_edge_litert, litert_torch, ray" \
  >>"$log" 2>&1 || { echo "bootstrap: toolchain import check failed (see $log)" >&2; exit 3; }
echo "$stamp" > .venv/.slmpack-stamp
