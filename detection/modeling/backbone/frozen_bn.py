"""FrozenBatchNorm2d (torchvision's), FixedBatchNorm2d, and a converter that swaps them in for BatchNorm2d.

Two arithmetics of a fixed BatchNorm, each some torchvision model's: FrozenBatchNorm2d computes x * scale + bias
(torchvision's class and numbers: its detectors built with weights, v1; with `inplace`, in the input's memory, as
the backbones use it: each of their BatchNorms reads a fresh convolution output); FixedBatchNorm2d computes F.batch_norm in eval mode, bit for bit
an nn.BatchNorm2d in eval (torchvision's v2 detector keeps BatchNorm2d everywhere). Same buffers and state-dict
keys for both (num_batches_tracked is dropped on load).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d as _TorchvisionFrozenBatchNorm2d

__all__ = ["FrozenBatchNorm2d", "FixedBatchNorm2d", "convert_frozen_batchnorm"]


class FrozenBatchNorm2d(_TorchvisionFrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d, the same numbers; `inplace=True` scales and shifts the input tensor itself
    (two elementwise passes without two activation-sized allocations; bit for bit the same result) - only for
    inputs nothing else reads, such as a convolution's output. Inputs of another dtype (autocast) are not
    modified."""

    def __init__(self, num_features: int, eps: float = 1e-5, inplace: bool = False):
        super().__init__(num_features, eps=eps)
        self.inplace = bool(inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.inplace or x.dtype != self.weight.dtype:
            return super().forward(x)
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x.mul_(scale).add_(bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inplace=True" if self.inplace else super().extra_repr()


class FixedBatchNorm2d(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d that computes like nn.BatchNorm2d in eval mode (F.batch_norm with the running
    statistics): the frozen stages of a backbone whose BatchNorm is otherwise trainable (MODEL.BACKBONE.FROZEN_BN
    False) keep BatchNorm2d's numbers exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def convert_frozen_batchnorm(module: nn.Module, frozen_cls: type = FrozenBatchNorm2d, inplace: bool = False
                             ) -> nn.Module:
    """Replace every BatchNorm2d (and SyncBatchNorm) in ``module`` by a ``frozen_cls`` (FrozenBatchNorm2d or
    FixedBatchNorm2d) with the same weight, bias, running mean and variance and eps (FrozenBatchNorm2d: `inplace`
    as given). Returns the converted module (a new one when ``module`` itself is a BatchNorm, else ``module``
    changed in place)."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = frozen_cls(module.num_features, eps=module.eps)
        if isinstance(frozen, FrozenBatchNorm2d):
            frozen.inplace = bool(inplace)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats and module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen.to(module.weight.device if module.affine else frozen.weight.device)
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child, frozen_cls, inplace)
        if new is not child:
            setattr(module, name, new)
    return module
