"""Models: backbones (registry), and the detector / classifier built on them."""

from .backbone import BACKBONES, Backbone, build_backbone, build_backbone_from_config

__all__ = ["BACKBONES", "Backbone", "build_backbone", "build_backbone_from_config"]
