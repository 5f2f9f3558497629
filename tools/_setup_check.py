"""Imported first by every tool: stops a run without the installed `detection` package with one line, not a traceback.

`make setup` installs the package in editable mode into .venv and builds its compiled ops, so the tools import it
from any folder; nothing here edits sys.path. Exit code 2, as for any other unusable input.
"""
import os
import sys

try:
    import detection  # noqa: F401
except ImportError as exc:
    _reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    print(f"{os.path.basename(sys.argv[0]) or 'detection'}: cannot import the detection package ({_reason}). "
          f"Run `make setup` in the repository root (it installs the requirements and the package into .venv and "
          f"builds its compiled ops), then use .venv/bin/python.", file=sys.stderr)
    sys.exit(2)
