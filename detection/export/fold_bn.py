"""Fold frozen (and eval-mode) BatchNorm into the convolution before it: one conv instead of conv + affine.

    n = fold_batchnorm(model)      # in place; returns how many BatchNorms were folded

A BatchNorm applied to a convolution's output with fixed statistics is y = (W x + b - mean) * g / sqrt(var + eps)
+ beta, i.e. a convolution with weight W * s and bias (b - mean) * s + beta, s = g / sqrt(var + eps) per output
channel. The folded weights are computed in float64 and stored in the conv's dtype; the BatchNorm becomes
nn.Identity. Pairs are found where the order conv -> BN is certain: consecutive children of an nn.Sequential
(torchvision's Conv2dNormActivation, MobileNetV2's blocks, the toolkit's ResNet stem, downsample branches) and
torchvision ResNet blocks' (conv1, bn1), (conv2, bn2), (conv3, bn3) (and a whole torchvision ResNet's stem).
Only for inference: the folded model must not be trained.
"""
from __future__ import annotations

import logging
from typing import Iterator, Tuple

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["fold_batchnorm", "fold_conv_bn", "is_foldable_bn", "uses_batch_norm_op"]

logger = logging.getLogger(__name__)


def is_foldable_bn(m: nn.Module) -> bool:
    """FrozenBatchNorm2d, or a BatchNorm2d in eval mode with running statistics (a fixed affine map)."""
    if isinstance(m, FrozenBatchNorm2d):
        return True
    return (isinstance(m, nn.BatchNorm2d) and not m.training and m.track_running_stats
            and m.running_mean is not None)


def uses_batch_norm_op(m: nn.Module) -> bool:
    """A foldable BatchNorm computed by F.batch_norm (nn.BatchNorm2d in eval, FixedBatchNorm2d) rather than
    torchvision's x * scale + bias (FrozenBatchNorm2d)."""
    from detection.modeling.backbone.frozen_bn import FixedBatchNorm2d

    return is_foldable_bn(m) and isinstance(m, (nn.BatchNorm2d, FixedBatchNorm2d))


def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A new Conv2d (with bias) equal to bn(conv(x)) for a foldable `bn` over conv's output channels."""
    w64 = conv.weight.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma * torch.rsqrt(var + float(bn.eps))
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(w64 * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - mean) * scale + beta)
    fused.weight.requires_grad_(False)
    fused.bias.requires_grad_(False)
    return fused


def _pairs(module: nn.Module) -> Iterator[Tuple[str, str]]:
    """(conv child name, bn child name) pairs of `module` whose forward is bn(conv(x))."""
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names[:-1], names[1:]):
            yield a, b
    elif isinstance(module, (BasicBlock, Bottleneck, ResNet)):  # ResNet: its stem's conv1 -> bn1
        for i in (1, 2, 3):
            if hasattr(module, f"conv{i}") and hasattr(module, f"bn{i}"):
                yield f"conv{i}", f"bn{i}"


def fold_batchnorm(model: nn.Module, only_batch_norm_ops: bool = False) -> int:
    """Fold every foldable BatchNorm that directly follows a Conv2d (see the module docstring), in place;
    only those computed by F.batch_norm (`uses_batch_norm_op`) with only_batch_norm_ops.

    Returns the number folded; BatchNorms left over (no conv before them) are logged."""
    folded = 0
    wanted = uses_batch_norm_op if only_batch_norm_ops else is_foldable_bn
    for module in list(model.modules()):
        for conv_name, bn_name in list(_pairs(module)):
            conv, bn = module._modules.get(conv_name), module._modules.get(bn_name)
            if not isinstance(conv, nn.Conv2d) or bn is None or not wanted(bn):
                continue
            if bn.running_mean.numel() != conv.out_channels:
                continue
            module._modules[conv_name] = fold_conv_bn(conv, bn)
            module._modules[bn_name] = nn.Identity()
            folded += 1
    left = [n for n, m in model.named_modules() if wanted(m)]
    if left:
        logger.info("fold_batchnorm: %d BatchNorm(s) not after a conv stay as they are: %s", len(left),
                    ", ".join(left[:5]))
    return folded
