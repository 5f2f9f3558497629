"""A stride-1 convolution whose backward pass skips the positions where the output gradient is zero.

    y = conv2d_sparse_grad(x, weight, bias, padding)    # forward: F.conv2d exactly
    SparseGradConv2d(...)                               # an nn.Conv2d that uses it in training on the CPU

The RPN head's 3x3 convolution is the case: its output feeds 1x1 objectness / delta layers whose losses read only
the sampled anchors (256 per image), so its output gradient is zero everywhere except at the <= 256 positions
holding a sampled anchor, out of ~70k on an 800x1067 image's pyramid. A dense backward spends as long as two
forward passes on those zeros; here the weight gradient is a GEMM over the active positions' input patches and
the input gradient is scattered from them, one kernel tap at a time (a tap's target pixels are distinct, so the
result is deterministic). The result equals the dense backward up to float summation order. Gradients with more
than MAX_ACTIVE_FRACTION active positions, and non-CPU tensors (cuDNN's dense backward; not measured here), take
the dense convolution backward.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv2d_sparse_grad", "SparseGradConv2d", "MAX_ACTIVE_FRACTION"]

# Above this fraction of active (nonzero-gradient) output positions the dense backward is the faster one
MAX_ACTIVE_FRACTION = 1 / 16


def _dense_backward(grad, x, weight, has_bias, padding, needs):
    return torch.ops.aten.convolution_backward(grad, x, weight, [weight.shape[0]] if has_bias else None, [1, 1],
                                               list(padding), [1, 1], False, [0, 0], 1,
                                               [needs[0], needs[1], has_bias and needs[2]])


class _SparseGradConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        # under autocast the convolution runs in the autocast dtype: cast here, as autocast would, so that the
        # backward sees its inputs in the dtype of the output gradient (and returns the parameters' own dtypes)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx, grad):
        gx, gw, gb = _SparseGradConv2d._backward(ctx, grad.to(ctx.saved_tensors[0].dtype))
        cast = [None if g is None else g.to(d) for g, d in zip((gx, gw, gb), ctx.dtypes)]
        return cast[0], cast[1], cast[2], None

    @staticmethod
    def _backward(ctx, grad):
        x, weight = ctx.saved_tensors
        ph, pw = ctx.padding
        needs = ctx.needs_input_grad[:3]
        active = grad.ne(0).any(dim=1)                                    # [N, Ho, Wo]
        count = int(active.sum())
        if grad.device.type != "cpu" or count > MAX_ACTIVE_FRACTION * active.numel():
            return _dense_backward(grad, x, weight, ctx.has_bias, ctx.padding, needs)
        n, c, h, w = x.shape
        k, _, kh, kw = weight.shape
        ni, yi, xi = active.nonzero(as_tuple=True)                        # [P] each, position order
        g = grad[ni, :, yi, xi]                                           # [P, K]
        gx = gw = gb = None
        if ctx.has_bias and needs[2]:
            gb = g.sum(dim=0)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        if needs[1]:
            xp = F.pad(x, (pw, pw, ph, ph))                                               # [N, C, H + 2ph, W + 2pw]
            patches = torch.stack([xp[ni, :, yi + i, xi + j] for i, j in taps], dim=2)    # [P, C, kh * kw]
            gw = (g.t() @ patches.reshape(count, c * kh * kw)).view(k, c, kh, kw)
        if needs[0]:
            col = (g @ weight.reshape(k, c * kh * kw)).view(count, c, kh * kw)            # [P, C, kh * kw]
            gxp = grad.new_zeros((n, c, h + 2 * ph, w + 2 * pw))
            for t, (i, j) in enumerate(taps):  # one tap's P target pixels are distinct: no accumulation races
                gxp[ni, :, yi + i, xi + j] += col[:, :, t]
            gx = gxp[:, :, ph:ph + h, pw:pw + w].contiguous()
        return gx, gw, gb


def conv2d_sparse_grad(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       padding: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride=1, padding=padding) (x [N, C, H, W], weight [K, C, kh, kw]) whose backward
    visits only the output positions with a nonzero gradient when they are few (module docstring)."""
    return _SparseGradConv2d.apply(x, weight, bias, tuple(int(p) for p in padding))


class SparseGradConv2d(nn.Conv2d):
    """An nn.Conv2d (same parameters, state dict, forward numbers) whose training-mode CPU forward records
    conv2d_sparse_grad's backward; needs stride 1, dilation 1, groups 1, integer zero padding. Elsewhere (eval, GPU,
    tracing / export / torch.compile) it is nn.Conv2d."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if (tuple(self.stride) != (1, 1) or tuple(self.dilation) != (1, 1) or self.groups != 1
                or isinstance(self.padding, str) or self.padding_mode != "zeros"):
            raise ValueError("SparseGradConv2d needs stride 1, dilation 1, groups 1 and integer zero padding")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() == 4
                and not torch.jit.is_tracing() and not torch.compiler.is_compiling()):
            return conv2d_sparse_grad(x, self.weight, self.bias, self.padding)
        return super().forward(x)
