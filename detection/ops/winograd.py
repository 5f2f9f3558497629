"""Winograd F(4x4, 3x3) convolution on the CPU, for the fast inference path (detection/export/fast.py).

    u = winograd_weight(w)                        # w [K, C, 3, 3] -> u [36, C, K], once per weight
    y = winograd_conv2d(x, u, bias)               # x [N, C, H, W] -> y [N, K, H, W] in x's layout (no autograd)
    WinogradConv2d(conv)                          # inference module (fast path), weights fixed at construction

A 3x3 / stride 1 / padding 1 convolution costs 9 multiply-adds per output and channel pair computed directly; the
Winograd form (Lavin & Gray 2015) computes each 4x4 output tile from its 6x6 input patch with 36 instead of 144:
input transform V = B^T d B (compiled, `detection::_winograd_f4x3_input`), 36 GEMMs over channels against the
weight transform U = G w G^T, output transform A^T M A with the bias (compiled, `detection::_winograd_f4x3_output_`),
block by block of tiles. On the CPUs measured (docs/benchmarks.md) that is 1.5-3x faster than oneDNN's direct
convolution for trunk, FPN, RPN and per-RoI layers with 64+ channels; its float32 error is about 4x the direct
convolution's (relative ~1e-5 against float64). In float64 it equals the direct convolution to ~1e-13.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from detection.ops import _backend
from detection.ops.sparse_grad_conv import SparseGradConv2d

__all__ = ["PLAIN_CONVS", "WinogradConv2d", "winograd_available", "winograd_eligible", "winograd_weight",
           "winograd_conv2d", "MIN_CHANNELS"]

# F(4, 3) for the interpolation points 0, 1, -1, 2, -2 (and infinity): u = G w G^T
_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                   [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)

# The smallest convolution worth transforming: at 64 channels it is ~0.8x oneDNN's time; below that the transforms'
# memory traffic costs about what the saved multiplications gain
MIN_CHANNELS = 64

# Conv2d classes whose eval forward is nn.Conv2d's own (what the fast path may replace)
PLAIN_CONVS = (nn.Conv2d, SparseGradConv2d)


def winograd_available() -> bool:
    """The compiled transforms are loaded (not with DETECTION_OPS=torchvision)."""
    return not _backend.USE_TORCHVISION


def winograd_eligible(conv: nn.Module) -> bool:
    """An nn.Conv2d (or SparseGradConv2d) on the CPU in float32 with a 3x3 kernel, stride 1, padding 1, dilation 1,
    groups 1, zero padding and at least MIN_CHANNELS input and output channels."""
    return (type(conv) in PLAIN_CONVS and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu"
            and tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.in_channels >= MIN_CHANNELS and conv.out_channels >= MIN_CHANNELS)


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """U = G w G^T of a [K, C, 3, 3] weight (computed in float64), as a contiguous [36, C, K] in the weight's
    dtype. No autograd."""
    w = weight.detach()
    gg = torch.kron(_G, _G).to(w.device)                      # [36, 9]: u[p * 6 + q] = sum G[p, a] w[a, b] G[q, b]
    k, c = w.shape[:2]
    u = torch.mm(gg, w.reshape(k * c, 9).double().t())       # [36, K * C]
    return u.to(w.dtype).view(36, k, c).transpose(1, 2).contiguous()


def tiles_per_block(channels: int, block_bytes: int = 1 << 24) -> int:
    """Tiles transformed and multiplied together: about `block_bytes` (16 MB) of transformed input (36 x tiles x
    channels float32), so that a block's buffers are reused by the allocator instead of being mapped afresh (page
    faults) and stay in the cache between the three steps, while each GEMM keeps 64+ rows."""
    return max(64, block_bytes // (36 * 4 * max(channels, 1)))


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    relu: bool = False) -> torch.Tensor:
    """The 3x3 / stride 1 / padding 1 convolution of x [N, C, H, W] by the weight whose transform is u [36, C, K]
    (winograd_weight), plus bias [K], then ReLU if `relu`: [N, K, H, W] in x's layout (channels_last, else
    contiguous). No autograd."""
    n, c, h, w = x.shape
    k = u.shape[2]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if not channels_last:
        x = x.contiguous()
    out = torch.empty((n, k, h, w), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    tiles = n * ((h + 3) // 4) * ((w + 3) // 4)
    block = tiles_per_block(max(c, k))
    ops = torch.ops.detection
    for t0 in range(0, tiles, block):
        t1 = min(tiles, t0 + block)
        v = ops._winograd_f4x3_input(x, t0, t1)                          # [36, t1 - t0, C]
        ops._winograd_f4x3_output_(out, torch.bmm(v, u), bias, t0, relu)  # products [36, t1 - t0, K]
    return out


class WinogradConv2d(nn.Module):
    """An inference-only replacement of a winograd_eligible Conv2d (weights fixed at construction). `weight` and
    `bias` stay as they were (parameter counts, summaries); the transformed weight is not part of the state dict."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not winograd_eligible(conv):
            raise ValueError(f"WinogradConv2d: {conv} is not a float32 CPU 3x3 conv with stride 1 and padding 1 "
                             f"and {MIN_CHANNELS}+ channels")
        self.weight, self.bias = conv.weight, conv.bias
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("transformed_weight", winograd_weight(conv.weight), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"WinogradConv2d: input has {x.shape[1]} channels, expected {self.in_channels}")
        bias = None if self.bias is None else self.bias.detach()
        return winograd_conv2d(x, self.transformed_weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), padding=(1, 1), Winograd F(4x4, 3x3)"
