"""The fast inference path: `detection.load(..., fast=True)`, `test_net.py --fast`, `demo.py --fast`.

    model = optimize_for_inference(model)          # eval mode, BatchNorm folded, channels_last where it helps
    with torch.inference_mode():
        outputs = model(images)                    # the eager model's detections (float32 rounding apart)

Folding (fold_bn.py) removes one memory pass per BatchNorm. channels_last (NHWC) lets oneDNN / cuDNN pick
their faster convolution kernels, and the CPU RoIAlign reads NHWC maps without a copy; `channels_last=None`
chooses it by device: CUDA, or a CPU build with oneDNN (measured faster for MobileNetV2 and ResNet-50 alike,
docs/benchmarks.md). The model must not be trained afterwards.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from detection.export.fold_bn import fold_batchnorm

__all__ = ["optimize_for_inference", "prefers_channels_last"]

logger = logging.getLogger(__name__)


def prefers_channels_last(device: torch.device) -> bool:
    """The device rule: CUDA, or a CPU with oneDNN (torch.backends.mkldnn)."""
    if torch.device(device).type == "cuda":
        return True
    return torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available()


def optimize_for_inference(model: nn.Module, device: Optional[torch.device] = None,
                           channels_last: Optional[bool] = None) -> nn.Module:
    """Eval mode, every frozen / eval BatchNorm folded into its conv, no gradients, and (by `channels_last`,
    None = prefers_channels_last) NHWC weights. In place; returns the model."""
    model.eval()
    model.requires_grad_(False)
    n = fold_batchnorm(model)
    if device is None:
        device = next(model.parameters()).device
    use_cl = prefers_channels_last(device) if channels_last is None else bool(channels_last)
    if use_cl:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    logger.info("fast inference: %d BatchNorm(s) folded, channels_last %s", n, "on" if use_cl else "off")
    model._fast_inference = {"folded": n, "channels_last": use_cl}
    return model
