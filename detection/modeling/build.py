"""The model-family registry and ``build_model``; imports no family (each registers itself).

    model = build_model(cfg)                  # classes from MODEL.NUM_CLASSES / DATA.CLASSES
    model = build_model(cfg, num_classes=4)   # classes resolved by the caller (the task asks the data layer)

A family is a function ``(cfg, num_classes=None) -> nn.Module`` decorated with
``@META_ARCHITECTURES.register("name")`` in its own module (faster_rcnn.py, classifier.py);
``detection/modeling/__init__.py`` imports those modules, so every name is registered once ``detection`` is
imported.
"""
from typing import Optional

from torch import nn

from detection.registry import Registry

__all__ = ["META_ARCHITECTURES", "build_model"]

META_ARCHITECTURES = Registry("meta-architecture")


def build_model(cfg, num_classes: Optional[int] = None, *, load_backbone_weights: bool = True,
                **family_args) -> nn.Module:
    """The model of cfg.MODEL.META_ARCHITECTURE. num_classes: outputs of the classifier layer (faster_rcnn:
    including background); None = from the config (MODEL.NUM_CLASSES, else DATA.CLASSES).
    load_backbone_weights=False: the backbone without MODEL.BACKBONE.WEIGHTS (no file is looked for), for a model
    that a full checkpoint or detector file is about to fill. family_args: further resolved values a family's
    builder takes (faster_rcnn: reported_classes)."""
    return META_ARCHITECTURES.get(cfg.MODEL.META_ARCHITECTURE)(
        cfg, num_classes=num_classes, load_backbone_weights=load_backbone_weights, **family_args)
