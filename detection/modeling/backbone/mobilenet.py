"""MobileNetV2 split at stride 16: trunk features[:14] (96 ch), head features[14:] + global average pool."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from torch import nn

from .base import BACKBONES, Backbone, StageSpec, build_torchvision_model
from .frozen_bn import convert_frozen_batchnorm

# features indices where the stages start: stem (stride 2), stride 4, 8, 16 (end of trunk), head (stride 32)
_MBV2_STAGES = (0, 2, 4, 7, 14, 19)


@BACKBONES.register("mobilenet_v2")
def build_mobilenet_v2(weights: Optional[str] = None, frozen_bn: bool = True) -> Backbone:
    """MobileNetV2. trunk: features[:14], [B,3,H,W] -> [B,96,H/16,W/16]. head: features[14:] (stride 2, up to
    the 1280-ch 1x1 conv) + global average pool, [R,96,14,14] -> [R,1280]. Stages (FREEZE_AT): features[0:2],
    [2:4], [4:7], [7:14], [14:]. Pyramid stages (FPN): the outputs of features[3], [6], [13] and [18] at strides
    4, 8, 16, 32 with 24, 32, 96 and 1280 channels (body layer names are the features indices)."""
    model, src = build_torchvision_model("mobilenet_v2", weights)
    if frozen_bn:
        convert_frozen_batchnorm(model, inplace=True)  # each BatchNorm reads a fresh conv output
    f = model.features
    trunk = f[: _MBV2_STAGES[4]]
    head = nn.Sequential(
        OrderedDict(features=f[_MBV2_STAGES[4]:], avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1))
    )
    stages = [f[a:b] for a, b in zip(_MBV2_STAGES[:-1], _MBV2_STAGES[1:])]
    split = _MBV2_STAGES[4]
    body = [(str(i), f"trunk.{i}" if i < split else f"head.features.{i}") for i in range(len(f))]  # slices keep keys
    specs = [StageSpec("3", 4, 24), StageSpec("6", 8, 32), StageSpec("13", 16, 96),
             StageSpec(str(len(f) - 1), 32, model.last_channel)]
    bb = Backbone("mobilenet_v2", trunk, head, 96, model.last_channel, pooler_size=14,
                  classifier_layer=model.classifier[1], stages=stages, body_paths=body, stage_specs=specs)
    bb.weights_source = src
    return bb
