"""detection: a Faster R-CNN object-detection toolkit on PyTorch with its own compiled ops.

    import detection
    model = detection.load("outputs/quickstart")     # detection/api.py: a Predictor
    result = model("photo.jpg")

Importing the package loads the compiled ops (``torch.ops.detection.*``, which exported programs from
tools/export_model.py need) and nothing else: ``import detection.ops`` stays light. ``detection.load`` and
``detection.Predictor`` import the API on first use. Each registry's package registers its members when it is
imported, detectron2's way: ``detection.modeling`` every model family (``META_ARCHITECTURES``) and backbone
(``BACKBONES``), ``detection.engine`` every task (``TASKS``); whoever looks a name up imports the registry from
there, so every registered name exists by then.

Layers, lowest first; a package imports only from the layers below it (tests/test_layout.py checks modeling):
``config``, ``registry``, ``utils`` -> ``ops`` (with the compiled ``_C``) -> ``modeling`` and
``data`` (side by side, neither imports the other) -> ``evaluation`` -> ``datasets`` -> ``analysis`` -> ``engine`` ->
``export`` and the Python API (``api``, ``image_input``, ``results``, ``video_io``); the scripts in ``tools/`` drive
``engine``, ``analysis`` and the API.
"""

__version__ = "0.1.0"

from detection import ops  # noqa: E402,F401  (torch.ops.detection.*)

__all__ = ["load", "Predictor", "__version__"]


def __getattr__(name):
    """detection.load / detection.Predictor, imported on first use (the API imports the engine and the models)."""
    if name in ("load", "Predictor"):
        from detection import api

        return getattr(api, name)
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
