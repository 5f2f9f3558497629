"""Shared by every test file: the scripts of tools/ (train_net, demo, ...) and dev/ (benchmarks, the GPU check) are
importable by their names (`import train_net`, `import gpu_check`), as they import their siblings when run. This is
the tests' one way to reach them; the `detection` package itself comes from the repository (run pytest from its
root) or from `make setup`'s editable install."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS, DEV = os.path.join(ROOT, "tools"), os.path.join(ROOT, "dev")
for _folder in (DEV, TOOLS):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)
