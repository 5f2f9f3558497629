"""Backbones: torchvision ImageNet networks split into a stride-16 trunk and a per-RoI head.

    from detection.modeling.backbone import BACKBONES, build_backbone, build_backbone_from_config
    bb = build_backbone("resnet50", weights="imagenet", freeze_at=2, frozen_bn=True)
    feats = bb.trunk(images)             # [B,3,H,W] -> [B,1024,H/16,W/16]
    vecs = bb.head(pooled)               # [R,1024,14,14] -> [R,2048]   (pooled at bb.pooler_size)
    logits = bb.classify(images)         # [B,1000], torchvision's own numbers

Registering a new backbone: a function ``(weights, frozen_bn) -> Backbone`` decorated with
``@BACKBONES.register("name")`` in a module imported below.
"""

from . import mobilenet, resnet, vgg  # noqa: F401  (register the backbones)
from .base import (
    BACKBONES,
    Backbone,
    StageSpec,
    build_backbone,
    build_backbone_from_config,
    build_torchvision_model,
)
from .frozen_bn import FixedBatchNorm2d, FrozenBatchNorm2d, convert_frozen_batchnorm
from .weights import (
    CARRIER_PACKAGES,
    TORCHVISION_FILES,
    WeightsError,
    WeightsNotFoundError,
    resolve_weights,
    search_locations,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "StageSpec",
    "build_backbone",
    "build_backbone_from_config",
    "build_torchvision_model",
    "FrozenBatchNorm2d",
    "FixedBatchNorm2d",
    "convert_frozen_batchnorm",
    "CARRIER_PACKAGES",
    "TORCHVISION_FILES",
    "WeightsError",
    "WeightsNotFoundError",
    "resolve_weights",
    "search_locations",
]
