"""detection: a Faster R-CNN object-detection toolkit on PyTorch with its own compiled ops.

    import detection
    model = detection.load("outputs/quickstart")     # detection/api.py: a Predictor
    result = model("photo.jpg")

Importing the package registers every model family (``detection.modeling.META_ARCHITECTURES``), backbone
(``detection.modeling.BACKBONES``) and task (``detection.engine.TASKS``), detectron2's way, and the compiled ops
(``torch.ops.detection.*``, which exported programs from tools/export_model.py need).

Layers, lowest first; a package imports only from the layers below it (tests/test_layout.py checks modeling):
``config``, ``registry``, ``utils`` -> ``ops`` (with the compiled ``_C``) -> ``modeling`` and
``data`` (side by side, neither imports the other) -> ``evaluation`` -> ``datasets`` -> ``analysis`` -> ``engine`` ->
``export`` and the Python API (``api``, ``image_input``, ``results``, ``video_io``); the scripts in ``tools/`` drive
``engine``, ``analysis`` and the API.
"""

__version__ = "0.1.0"

from detection import engine, modeling  # noqa: E402,F401  (register the families and their tasks)
from detection.api import Predictor, load  # noqa: E402

__all__ = ["load", "Predictor", "__version__"]
