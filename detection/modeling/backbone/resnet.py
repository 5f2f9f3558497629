"""ResNet C4 split (detectron2 / py-faster-rcnn ResNet): trunk stem+res2..res4, head res5 + global average pool."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from torch import nn

from .base import BACKBONES, Backbone, StageSpec, build_torchvision_model
from .frozen_bn import convert_frozen_batchnorm


def _build_resnet(name: str, weights: Optional[str], frozen_bn: bool) -> Backbone:
    model, src = build_torchvision_model(name, weights)
    if frozen_bn:
        convert_frozen_batchnorm(model, inplace=True)  # each BatchNorm reads a fresh conv output
    stem = nn.Sequential(OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool))
    trunk = nn.Sequential(OrderedDict(stem=stem, layer1=model.layer1, layer2=model.layer2, layer3=model.layer3))
    head = nn.Sequential(OrderedDict(layer4=model.layer4, avgpool=model.avgpool, flatten=nn.Flatten(1)))
    c5 = model.fc.in_features  # layer4's channels; layer3 has half of them (BasicBlock and Bottleneck alike)
    c4 = c5 // 2
    body = [(n, f"trunk.stem.{n}") for n in ("conv1", "bn1", "relu", "maxpool")]
    body += [(f"layer{i}", f"trunk.layer{i}") for i in (1, 2, 3)] + [("layer4", "head.layer4")]
    specs = [StageSpec(f"layer{i}", 2 ** (i + 1), c5 // 2 ** (4 - i)) for i in (1, 2, 3, 4)]
    bb = Backbone(name, trunk, head, c4, c5, pooler_size=14, classifier_layer=model.fc,
                  stages=[stem, model.layer1, model.layer2, model.layer3, model.layer4], body_paths=body,
                  stage_specs=specs)
    bb.weights_source = src
    return bb


_DOC = """{name}: trunk = stem + layer1..layer3 (C4), [B,3,H,W] -> [B,{c4},H/16,W/16]; head = layer4 (res5) + global
    average pool, [R,{c4},14,14] -> [R,{c5}]. Stages (FREEZE_AT): stem, layer1, layer2, layer3, layer4. Pyramid
    stages (FPN C2..C5): layer1..layer4 at strides 4, 8, 16, 32 with {c2}, {c3}, {c4}, {c5} channels."""


def _register(name: str, c4: int, c5: int):
    def build(weights: Optional[str] = None, frozen_bn: bool = True) -> Backbone:
        return _build_resnet(name, weights, frozen_bn)

    build.__name__ = f"build_{name}"
    build.__doc__ = _DOC.format(name=name, c2=c5 // 8, c3=c5 // 4, c4=c4, c5=c5)
    BACKBONES.register(name, build)
    return build


build_resnet18 = _register("resnet18", 256, 512)
build_resnet34 = _register("resnet34", 256, 512)
build_resnet50 = _register("resnet50", 1024, 2048)
build_resnet101 = _register("resnet101", 1024, 2048)
