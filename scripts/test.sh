#!/usr/bin/env bash
# Second command of the README: set up, then run the tests (real redis-server, tritonserver, gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
