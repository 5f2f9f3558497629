"""Which implementation `detection.ops` uses: the compiled `detection._C` (default) or torchvision.ops.

`DETECTION_OPS=torchvision` in the environment selects torchvision.ops explicitly; otherwise the compiled
extension must be built, and importing `detection.ops` without it fails with instructions. A built module that
carries a private libstdc++ (no libstdc++.so among its ELF NEEDED entries, see _elf_check.py) is refused before
it is loaded: it would crash the process at its first error message with a number in it.
"""
import importlib.util
import os

import torch  # noqa: F401  (loads libc10 / libtorch before the extension that links to them)

from detection.ops._elf_check import FIX, private_libstdcxx_problem

BACKEND = os.environ.get("DETECTION_OPS", "compiled").strip().lower() or "compiled"
_VALID = ("compiled", "torchvision")
if BACKEND not in _VALID:
    raise ImportError(f"DETECTION_OPS={BACKEND!r} is not one of {_VALID}")

USE_TORCHVISION = BACKEND == "torchvision"


def refuse_private_libstdcxx(path: str) -> None:
    """Raises ImportError naming `path` and the fix when that extension module links libstdc++ statically."""
    problem = private_libstdcxx_problem(path)
    if problem is not None:
        raise ImportError(f"{problem}; refusing to load it. Rebuild it with the system compiler from the repository "
                          f"root: `{FIX} python setup.py build_ext --inplace` (or `make setup` with those "
                          f"variables), or set DETECTION_OPS=torchvision to use torchvision.ops instead.")


if not USE_TORCHVISION:
    try:
        _spec = importlib.util.find_spec("detection._C")
    except ImportError:  # reported with instructions just below
        _spec = None
    if _spec is not None and _spec.origin and os.path.isfile(_spec.origin):
        refuse_private_libstdcxx(_spec.origin)
    try:
        from detection import _C  # noqa: F401  (loading it registers torch.ops.detection.*)
    except ImportError as exc:  # pragma: no cover - exercised by hand on an unbuilt tree
        raise ImportError(
            "detection._C (the compiled NMS / RoIAlign / RoIPool ops) is not built: "
            f"{exc}.\nBuild it from the repository root with `make setup` "
            "(or `.venv/bin/pip install --no-build-isolation -e .`), "
            "or set DETECTION_OPS=torchvision to use torchvision.ops instead."
        ) from exc
    from detection.ops import _register  # noqa: F401  (autograd and fake kernels)
