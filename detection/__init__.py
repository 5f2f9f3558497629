"""detection: a Faster R-CNN object-detection toolkit on PyTorch with its own compiled ops.

Importing the package registers every model family (``detection.modeling.META_ARCHITECTURES``), backbone
(``detection.modeling.BACKBONES``) and task (``detection.engine.TASKS``), detectron2's way.

Layers, lowest first; a package imports only from the layers below it (tests/test_layout.py checks modeling):
``config``, ``registry``, ``utils`` -> ``ops`` (with the compiled ``_C``) -> ``modeling`` and
``data`` (side by side, neither imports the other) -> ``evaluation`` -> ``datasets`` -> ``engine``; the scripts in
``tools/`` drive ``engine``.
"""

__version__ = "0.1.0"

from detection import engine, modeling  # noqa: E402,F401  (register the families and their tasks)
