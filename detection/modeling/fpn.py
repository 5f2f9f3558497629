"""Feature Pyramid Network neck (Lin et al. 2017) over any registered backbone's pyramid stages.

    neck = build_fpn_backbone(bb, in_strides=(4, 8, 16, 32), out_channels=256)   # bb: a registered Backbone
    levels = neck(images)       # [B,3,H,W] -> OrderedDict p2 [B,256,H/4,W/4], p3, p4, p5, p6 [B,256,H/64,W/64]

torchvision's `BackboneWithFPN` layout and arithmetic, so its state dicts load by name: `body.<torchvision child
name>` (the backbone's layers, run in order, the StageSpec outputs tapped), `fpn.inner_blocks.i.0` (lateral 1x1),
`fpn.layer_blocks.i.0` (output 3x3), with `.1` a BatchNorm2d when norm='bn' (torchvision's v2). Top-down: nearest
upsampling to the lateral's size, added. Top block 'maxpool': P6 = max_pool2d(P5, kernel 1, stride 2)
(torchvision's LastLevelMaxPool; an RPN-only level, not pooled by the RoI heads).
"""
from collections import OrderedDict
from typing import Dict, List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeaturePyramidNetwork", "FPNBackbone", "build_fpn_backbone"]


def _conv_block(cin: int, cout: int, kernel: int, norm: str) -> nn.Sequential:
    """torchvision's Conv2dNormActivation without activation: conv (bias only without norm) [+ BatchNorm2d]."""
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not norm)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if norm == "bn" else nn.Sequential(conv)


class FeaturePyramidNetwork(nn.Module):
    """Lateral 1x1 + top-down nearest upsampling + output 3x3 convolutions, and an optional stride-2 top level.

    Args:
        in_channels: channels of the inputs C_i, finest first. out_channels: of every output level.
        norm: '' (plain convs with bias, torchvision v1) or 'bn' (conv + BatchNorm2d, torchvision v2).
        top_block: 'maxpool' (one more level: max_pool2d(last output, 1, 2)) or 'none'.
    forward(list of [B, C_i, H_i, W_i], finest first) -> list of [B, out_channels, H_i, W_i] (+ the top level).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, norm: str = "",
                 top_block: str = "maxpool"):
        super().__init__()
        if norm not in ("", "bn"):
            raise ValueError(f"FPN norm must be '' or 'bn', got {norm!r}")
        if top_block not in ("maxpool", "none"):
            raise ValueError(f"FPN top_block must be 'maxpool' or 'none', got {top_block!r}")
        self.inner_blocks = nn.ModuleList(_conv_block(c, out_channels, 1, norm) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_conv_block(out_channels, out_channels, 3, norm) for _ in in_channels)
        self.top_block = top_block
        self.out_channels = int(out_channels)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        last_inner = self.inner_blocks[-1](x[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(x) - 2, -1, -1):
            lateral = self.inner_blocks[idx](x[idx])  # a fresh tensor: the top-down sum is added into it
            last_inner = lateral.add_(F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest"))
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.top_block == "maxpool":
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return results


class FPNBackbone(nn.Module):
    """A backbone's layers (`body`, run in order, `return_layers` tapped) followed by a FeaturePyramidNetwork.

    Args:
        body_layers: name -> module, from the image to the deepest tapped layer (Backbone.body_layers()).
        return_layers: names of the tapped layers, finest first. in_channels, strides: theirs.
        out_channels, norm, top_block: see FeaturePyramidNetwork.
    Attributes: level_names ('p2'...: p<log2 stride>), strides {name: stride}, pooled_levels (the levels made
    from backbone stages, which the RoI heads pool from; the top block's level only feeds the RPN), out_channels.
    forward([B, 3, H, W]) -> OrderedDict level name -> [B, out_channels, ~H/stride, ~W/stride], finest first.
    """

    def __init__(self, body_layers: "OrderedDict[str, nn.Module]", return_layers: Sequence[str],
                 in_channels: Sequence[int], strides: Sequence[int], out_channels: int = 256, norm: str = "",
                 top_block: str = "maxpool"):
        super().__init__()
        names = list(body_layers)
        missing = [r for r in return_layers if r not in names]
        if missing:
            raise ValueError(f"FPN return layers {missing} are not among the body layers {names}")
        last = max(names.index(r) for r in return_layers)
        self.body = nn.ModuleDict(OrderedDict((n, body_layers[n]) for n in names[:last + 1]))
        self.return_layers = list(return_layers)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, norm, top_block)
        strides = [int(s) for s in strides]
        if top_block == "maxpool":
            strides.append(strides[-1] * 2)
        self.level_names = [f"p{s.bit_length() - 1}" for s in strides]
        self.strides: Dict[str, int] = dict(zip(self.level_names, strides))
        self.pooled_levels = self.level_names[:len(return_layers)]
        self.out_channels = int(out_channels)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        taps = []
        for name, layer in self.body.items():
            x = layer(x)
            if name in self.return_layers:
                taps.append(x)
        return OrderedDict(zip(self.level_names, self.fpn(taps)))

    def extra_repr(self) -> str:
        return f"return_layers={self.return_layers}, levels={self.strides}"


def build_fpn_backbone(backbone, in_strides: Sequence[int] = (4, 8, 16, 32), out_channels: int = 256,
                       norm: str = "", top_block: str = "maxpool") -> FPNBackbone:
    """FPNBackbone over the `backbone`'s StageSpecs at `in_strides` (Backbone from the registry; its freeze and
    frozen BatchNorm settings are kept: the modules are shared)."""
    by_stride = {s.stride: s for s in backbone.stage_specs}
    bad = [s for s in in_strides if s not in by_stride]
    if bad or list(in_strides) != sorted(in_strides) or not in_strides:
        raise ValueError(f"MODEL.FPN.IN_STRIDES {list(in_strides)}: backbone {backbone.name} has pyramid stages at "
                         f"strides {sorted(by_stride)} (give some of them, increasing)")
    specs = [by_stride[s] for s in in_strides]
    return FPNBackbone(backbone.body_layers(), [s.name for s in specs], [s.channels for s in specs],
                       [s.stride for s in specs], out_channels, norm, top_block)
