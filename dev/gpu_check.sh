#!/usr/bin/env bash
# The whole GPU path in one time-boxed run on a bare GPU machine (torch + torchvision installed), from any folder:
#
#   bash dev/gpu_check.sh [--out DIR] [--budget 480] [--steps a,b] [--skip a,b] [--iters 200] [--dry-run]
#
# Steps, outputs and exit code: dev/gpu_check.py (--help); how to run it with the device tool:
# docs/benchmarks.md, "GPU check". PYTHON selects the interpreter (default python3, the one holding torch).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "gpu_check.sh: no '$PYTHON' here; set PYTHON to the interpreter that has torch" >&2
  exit 2
fi
exec "$PYTHON" -u dev/gpu_check.py "$@"
