"""Models: backbones (registry), the detector and the classifier built on them, and test-time augmentation.

Owns every nn.Module and its ``build_*`` function. Must not import ``detection.data``, ``detection.engine``,
``detection.evaluation`` or ``detection.datasets`` (a test greps the imports): what a model needs from the data
(number of classes, class names) reaches its builder as arguments.

Importing this package registers every family in ``META_ARCHITECTURES`` and every backbone in ``BACKBONES``.
"""

from . import backbone_tiny, classifier, faster_rcnn  # noqa: F401  (register the families and the test backbone)
from .backbone import BACKBONES, Backbone, build_backbone, build_backbone_from_config
from .build import META_ARCHITECTURES, build_model

__all__ = ["BACKBONES", "Backbone", "build_backbone", "build_backbone_from_config", "META_ARCHITECTURES",
           "build_model"]
