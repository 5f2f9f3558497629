"""The model's view of its input: its own preprocessor (resize rule, sizes, padding) and anchor generators.

    view = build_model_view(cfg)         # a Faster R-CNN built from the config, no weights loaded
    view.train_sizes(h, w)               # [(scale, (nh, nw), (Hp, Wp))] for every TRAIN.SCALES entry
    view.strides                         # [level stride], finest first (C4: [FEAT_STRIDE])
    view.cell_anchors                    # [level] float64 [A, 4] xyxy anchors of the cell at (0, 0)

Everything comes from the detector `build_model(cfg)` returns, so what the analysis reports is what that model
trains on: ``rpn.anchor_generator`` (its levels' base anchors and placement), ``rpn.allowed_border`` and
``preprocess`` (detection/ops/resize.py's rule, the size divisibility).
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import torch

from detection.modeling.anchors import TorchvisionAnchorGenerator
from detection.ops.resize import resize_scale, resized_size

__all__ = ["ModelView", "build_model_view", "level_strides"]


@dataclasses.dataclass
class ModelView:
    """What the analysis needs of a detector; see the module docstring.

    strides: nominal stride of every anchor level, finest first. cell_anchors: per level the float64 [A, 4] xyxy
    anchors of the cell at (0, 0) (AnchorGenerator.base_anchors). torchvision_placement: per level, True when the
    level's stride is the padded size // feature size (TorchvisionAnchorGenerator) rather than the fixed stride.
    allowed_border: rpn.allowed_border (< 0: no border rule). positive_overlap / negative_overlap: the RPN matcher's
    thresholds. resize_rule, train_min_sizes, train_max_size, test_min_size, test_max_size, size_divisibility:
    the preprocessor's. preprocess: the model's ImagePreprocessor itself (to show images as the model gets them).
    """

    strides: List[int]
    cell_anchors: List[torch.Tensor]
    torchvision_placement: List[bool]
    allowed_border: float
    positive_overlap: float
    negative_overlap: float
    resize_rule: str
    train_min_sizes: Tuple[int, ...]
    train_max_size: int
    test_min_size: int
    test_max_size: int
    size_divisibility: int
    preprocess: Optional[torch.nn.Module] = None

    def resized(self, height: int, width: int, min_size: int, max_size: int) -> Tuple[float, Tuple[int, int],
                                                                                       Tuple[int, int]]:
        """(scale, (nh, nw) resized, (Hp, Wp) padded to the size divisibility) of an image, as the model does."""
        scale = resize_scale(height, width, min_size, max_size, self.resize_rule)
        nh, nw = resized_size(height, width, scale, self.resize_rule)
        d = max(int(self.size_divisibility), 1)
        return scale, (nh, nw), ((nh + d - 1) // d * d, (nw + d - 1) // d * d)

    def train_sizes(self, height: int, width: int):
        """The model's training resize of an h x w image at every TRAIN.SCALES entry (see `resized`)."""
        return [self.resized(height, width, s, self.train_max_size) for s in self.train_min_sizes]

    def feature_size(self, padded: Tuple[int, int], level: int) -> Tuple[int, int]:
        """(h, w) of level `level`'s feature map for a padded input: ceil(padded / stride) (exact for the padded
        sizes the preprocessor makes; P6 is the stride-2 max-pool of P5, ceil too)."""
        s = self.strides[level]
        return math.ceil(padded[0] / s), math.ceil(padded[1] / s)

    def level_stride_hw(self, padded: Tuple[int, int], level: int) -> Tuple[int, int]:
        """The (sy, sx) between neighbouring cells of a level: the fixed stride, or torchvision's padded // feature."""
        if not self.torchvision_placement[level]:
            return self.strides[level], self.strides[level]
        fh, fw = self.feature_size(padded, level)
        return padded[0] // fh, padded[1] // fw


def level_strides(cfg, model) -> List[int]:
    """Nominal stride of every anchor level of `model` (built from `cfg`): the FPN's levels, or FEAT_STRIDE."""
    if cfg.MODEL.NECK == "fpn":
        return [int(model.backbone.strides[n]) for n in model.backbone.level_names]
    return [int(cfg.FEAT_STRIDE)]


def build_model_view(cfg) -> ModelView:
    """The ModelView of the Faster R-CNN `cfg` describes (built without loading any weight file)."""
    from detection.config import ConfigError
    from detection.modeling.build import build_model

    if cfg.MODEL.META_ARCHITECTURE != "faster_rcnn":
        raise ConfigError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: anchors and the detector's "
                          f"resize exist for faster_rcnn only")
    # the class count changes no anchor and no size; no backbone file is needed
    model = build_model(cfg, num_classes=2, load_backbone_weights=False)
    return view_of_model(model, level_strides(cfg, model))


def view_of_model(model, strides: Sequence[int]) -> ModelView:
    """The ModelView of a built FasterRCNN whose anchor levels have nominal `strides`."""
    gens = list(model.rpn.anchor_generator.generators)
    if len(gens) != len(strides):
        raise ValueError(f"{len(gens)} anchor generators for {len(strides)} strides")
    pre = model.preprocess
    matcher = model.rpn.matcher
    return ModelView(
        strides=[int(s) for s in strides], cell_anchors=[g.base_anchors.double() for g in gens],
        torchvision_placement=[isinstance(g, TorchvisionAnchorGenerator) for g in gens],
        allowed_border=float(model.rpn.allowed_border),
        positive_overlap=float(matcher.fg_thresh), negative_overlap=float(matcher.bg_thresh_hi),
        resize_rule=pre.resize_rule, train_min_sizes=tuple(int(s) for s in pre.train_min_sizes),
        train_max_size=int(pre.train_max_size), test_min_size=int(pre.test_min_size),
        test_max_size=int(pre.test_max_size), size_divisibility=int(pre.size_divisibility), preprocess=pre)
