#!/usr/bin/env bash
# Sets up everything OrbitHash needs on Debian/Ubuntu with Python 3.11: redis-server (apt, if
# missing), a virtual environment in .venv with every package pinned by pyproject.toml and
# constraints.txt. Safe to run again: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "OrbitHash needs Python 3.11 (python3.11 or python3 on PATH)" >&2
  exit 1
fi

stamp=".venv/.orbithash-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> creating .venv and installing pinned packages"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade "pip==26.3"
  # torch==2.13.0 is the CPU build; pinning it keeps pip from pulling a multi-GB CUDA build.
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
# The index's Hamming kernels, compiled now into numba's on-disk cache (__pycache__ beside the
# sources): the first cluster start and every shard after it load them instead of compiling each
# (about 40 s of CPU per process on 2 cores). A filled cache makes this a 2 s check.
echo "==> compiling the index kernels (numba cache)"
.venv/bin/python -c "from orbithash.index import warm_up; warm_up()"
echo "==> environment ready (.venv)"
