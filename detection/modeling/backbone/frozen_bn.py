"""FrozenBatchNorm2d (torchvision's) and a converter that swaps it in for BatchNorm2d with the same numbers."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["FrozenBatchNorm2d", "convert_frozen_batchnorm"]


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (and SyncBatchNorm) in ``module`` by a FrozenBatchNorm2d with the same
    weight, bias, running mean and variance and eps. Returns the converted module (a new one when ``module``
    itself is a BatchNorm, else ``module`` changed in place)."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats and module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen.to(module.weight.device if module.affine else frozen.weight.device)
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
