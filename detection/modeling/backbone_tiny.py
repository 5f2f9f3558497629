"""'tiny': a small random-init stride-16 backbone for tests, smoke runs and overfitting checks (CPU-fast).

trunk: 4 x (3x3 conv stride 2 + ReLU) and a 3x3 conv + ReLU, [B,3,H,W] -> [B,64,H/16,W/16].
head: [R,64,7,7] -> flatten -> Linear -> ReLU -> [R,256]. No ImageNet weights exist for it.
Pyramid stages (FPN): the trunk's children '1', '2', '3' at strides 4, 8, 16 (32, 64, 64 channels).
"""
from collections import OrderedDict
from typing import Optional

from torch import nn

from detection.modeling.backbone import BACKBONES, Backbone
from detection.modeling.backbone.base import StageSpec


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def build_tiny(weights: Optional[str] = None, frozen_bn: bool = True, channels: int = 64,
               head_channels: int = 256) -> Backbone:
    """Tiny backbone (weights must be None/''; frozen_bn is unused: there is no BatchNorm)."""
    if weights:
        raise ValueError(f"the 'tiny' backbone has no pretrained weights (got weights={weights!r})")
    c = channels
    stages = [_conv(3, c // 4, 2), _conv(c // 4, c // 2, 2), _conv(c // 2, c, 2),
              nn.Sequential(_conv(c, c, 2), _conv(c, c, 1))]
    trunk = nn.Sequential(*stages)
    fc = nn.Linear(c * 7 * 7, head_channels)
    nn.init.kaiming_uniform_(fc.weight, nonlinearity="relu")
    nn.init.zeros_(fc.bias)
    head = nn.Sequential(OrderedDict(flatten=nn.Flatten(1), fc=fc, relu=nn.ReLU(inplace=True)))
    specs = [StageSpec("1", 4, c // 2), StageSpec("2", 8, c), StageSpec("3", 16, c)]
    return Backbone("tiny", trunk, head, c, head_channels, pooler_size=7, classifier_layer=None, stages=stages,
                    body_paths=[(str(i), f"trunk.{i}") for i in range(len(stages))], stage_specs=specs)


if "tiny" not in BACKBONES:
    BACKBONES.register("tiny", build_tiny)
