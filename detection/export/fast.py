"""The fast inference path: `detection.load(..., fast=True)`, `test_net.py --fast`, `demo.py --fast`.

    model = optimize_for_inference(model)          # eval mode, BatchNorm folded, channels_last where it helps
    with torch.inference_mode():
        outputs = model(images)                    # the eager model's detections (float32 rounding apart)

Folding (fold_bn.py) removes the BatchNorms' elementwise passes. channels_last (NHWC) lets oneDNN / cuDNN pick
their faster convolution kernels, and the CPU RoIAlign reads NHWC maps without a copy; `channels_last=None`
chooses it by device: CUDA, or a CPU build with oneDNN (measured faster for MobileNetV2 and ResNet-50 alike,
docs/benchmarks.md). On such a CPU the convolutions' weights are also reordered once into oneDNN's layout
(`PackedConv2d`, the weight prepacking torch.compile's CPU backend does) instead of at every call: the same
oneDNN convolution on the same NHWC input, so the same numbers. Every 3x3 / stride-1 convolution with 64+
channels can become a Winograd F(4x4, 3x3) convolution on the CPU (`WinogradConv2d`, detection/ops/winograd.py: 4x fewer
multiplications, 1.5-3x faster than oneDNN there, float32 error ~1e-5 relative): by default only after the trunk
(FPN outputs, RPN head, per-RoI head), `winograd="all"` also in the trunk, "none" never.
The model must not be trained afterwards, nor moved to another device.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from detection.export.fold_bn import fold_batchnorm
from detection.ops.winograd import PLAIN_CONVS, WinogradConv2d, winograd_available, winograd_eligible

# Where the fast path uses Winograd convolutions on the CPU. "heads" (the default): after the trunk only. Its
# float32 error (~1e-5 relative per convolution) compounds through a trunk's depth: on a random-weight R50-FPN
# "all" moved scores by 2.2e-4 (outside the fast path's 1e-4 bound) where "heads" adds nothing measurable
# (docs/benchmarks.md). "all" is the fastest.
WINOGRAD_CHOICES = ("heads", "all", "none")

__all__ = ["WINOGRAD_CHOICES", "optimize_for_inference", "prefers_channels_last", "pack_conv_weights", "PackedConv2d",
           "use_winograd_convs"]

logger = logging.getLogger(__name__)


def prefers_channels_last(device: torch.device) -> bool:
    """The device rule: CUDA, or a CPU with oneDNN (torch.backends.mkldnn)."""
    if torch.device(device).type == "cuda":
        return True
    return torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available()


class PackedConv2d(nn.Module):
    """A Conv2d for the CPU whose weight is reordered once into oneDNN's blocked layout; forward(x) is the oneDNN
    convolution of x in NHWC (bit for bit the Conv2d's on an NHWC input). `weight` and `bias` stay as they were
    (parameter counts, summaries); the packed copy is not part of the state dict."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), int(conv.groups)
        self._packed: Optional[torch.Tensor] = None

    def _pack(self, shape) -> torch.Tensor:
        # oneDNN picks the layout for an input shape; the first call's (a trunk's batch of one, a RoI head's
        # batch of RoIs) serves every later shape too (any layout is correct for any input)
        return torch.ops.mkldnn._reorder_convolution_weight(self.weight.detach().contiguous(), self.padding,
                                                            self.stride, self.dilation, self.groups, list(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if x.numel() == 0:  # no RoI: nothing to pack for
            return nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                        self.groups)
        if self._packed is None:
            self._packed = self._pack(x.shape)
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed, self.bias, self.padding, self.stride,
                                                       self.dilation, self.groups, "none", [], "")

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size="
                f"{tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, padding={tuple(self.padding)}, "
                f"groups={self.groups}, packed for oneDNN")


def _packable(conv: nn.Module) -> bool:
    return (type(conv) in PLAIN_CONVS and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu")


def pack_conv_weights(model: nn.Module) -> int:
    """Replace every float32 CPU Conv2d by a PackedConv2d, in place; returns how many (0 when this torch build
    has no oneDNN convolution ops)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return 0
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if _packable(child):
                setattr(module, name, PackedConv2d(child))
                n += 1
    return n


def _trunk_modules(model: nn.Module) -> set:
    """ids of the modules of the detector's trunk: `model.backbone.body` (FPN: the neck is not trunk) or
    `model.backbone`; the whole model when it has no `backbone`."""
    backbone = getattr(model, "backbone", None)
    trunk = getattr(backbone, "body", backbone) if isinstance(backbone, nn.Module) else model
    return {id(m) for m in trunk.modules()}


def use_winograd_convs(model: nn.Module, where: str = "heads") -> int:
    """Replace winograd_eligible Conv2ds (3x3, stride 1, 64+ channels, float32 CPU) by WinogradConv2d, in place:
    `where` = "heads" (those after the trunk: FPN outputs, RPN head, per-RoI head), "all", or "none". Returns how
    many (0 without the compiled ops: DETECTION_OPS=torchvision)."""
    if where not in WINOGRAD_CHOICES:
        raise ValueError(f"winograd={where!r} is not one of {WINOGRAD_CHOICES}")
    if where == "none" or not winograd_available():
        return 0
    skip = _trunk_modules(model) if where == "heads" else set()
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if winograd_eligible(child) and id(child) not in skip:
                setattr(module, name, WinogradConv2d(child))
                n += 1
    return n


def optimize_for_inference(model: nn.Module, device: Optional[torch.device] = None,
                           channels_last: Optional[bool] = None, winograd: str = "heads") -> nn.Module:
    """Eval mode, every frozen / eval BatchNorm folded into its conv, no gradients, and (by `channels_last`,
    None = prefers_channels_last) NHWC weights, prepacked for oneDNN on the CPU; on the CPU, 3x3 stride-1
    convolutions of 64+ channels in Winograd form (`winograd`: "heads", "all" or "none"; see use_winograd_convs).
    In place; returns the model."""
    if winograd not in WINOGRAD_CHOICES:
        raise ValueError(f"winograd={winograd!r} is not one of {WINOGRAD_CHOICES}")
    model.eval()
    model.requires_grad_(False)
    n = fold_batchnorm(model)
    if device is None:
        device = next(model.parameters()).device
    on_cpu = torch.device(device).type == "cpu"
    use_cl = prefers_channels_last(device) if channels_last is None else bool(channels_last)
    wino = use_winograd_convs(model, winograd) if on_cpu else 0
    packed = 0
    if use_cl:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
        if on_cpu:
            packed = pack_conv_weights(model)
    logger.info("fast inference: %d BatchNorm(s) folded, channels_last %s, %d Winograd convs, %d conv weights "
                "packed for oneDNN", n, "on" if use_cl else "off", wino, packed)
    model._fast_inference = {"folded": n, "channels_last": use_cl, "winograd": wino, "packed": packed}
    return model
