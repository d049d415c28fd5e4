#!/usr/bin/env bash
# First command of the README: set up, then run the whole cluster end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/orbithash demo "$@"
