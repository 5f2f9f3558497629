"""Which implementation `detection.ops` uses: the compiled `detection._C` (default) or torchvision.ops.

`DETECTION_OPS=torchvision` in the environment selects torchvision.ops explicitly; otherwise the compiled
extension must be built, and importing `detection.ops` without it fails with instructions.
"""
import os

import torch  # noqa: F401  (loads libc10 / libtorch before the extension that links to them)

BACKEND = os.environ.get("DETECTION_OPS", "compiled").strip().lower() or "compiled"
_VALID = ("compiled", "torchvision")
if BACKEND not in _VALID:
    raise ImportError(f"DETECTION_OPS={BACKEND!r} is not one of {_VALID}")

USE_TORCHVISION = BACKEND == "torchvision"

if not USE_TORCHVISION:
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
