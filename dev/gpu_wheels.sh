#!/usr/bin/env bash
# Download, where PyPI is reachable, the wheels the GPU machine lacks into .whl/ (git ignores it; the device tool
# carries it with carry: [".whl"]), at the versions of the project's environment, for the device's Python:
#
#   bash dev/gpu_wheels.sh [--python-version 3.12] [--wheels .whl] [--dry-run]
#
# PYTHON selects that environment's interpreter (default .venv/bin/python, else python3). See dev/gpu_wheels.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python
  else
    PYTHON=python3
  fi
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "gpu_wheels.sh: no '$PYTHON' here; set PYTHON to the project environment's interpreter" >&2
  exit 2
fi
exec "$PYTHON" dev/gpu_wheels.py --from-python "$PYTHON" "$@"
