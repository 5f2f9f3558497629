"""detection: a Faster R-CNN object-detection toolkit on PyTorch with its own compiled ops.

    import detection
    model = detection.load("outputs/quickstart")     # detection/api.py
    result = model("photo.jpg")

Importing the package registers the compiled ops (`torch.ops.detection.*`), which exported programs
(`torch.export.load` of a .pt2 from tools/export_model.py) need.
"""

__version__ = "0.1.0"

from detection import ops as _ops  # noqa: E402,F401  (registers torch.ops.detection.* and their fake kernels)
from detection.api import Predictor, load  # noqa: E402

__all__ = ["load", "Predictor", "__version__"]
