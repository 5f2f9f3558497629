"""Box regression targets (R-CNN's dx, dy, dw, dh) and box utilities, in continuous xyxy coordinates.

width = x2 - x1, centre = x1 + 0.5 * width, in both `encode` and `decode`, so decode(encode(b, r), r) == b.
Targets are normalised like py-faster-rcnn: (t - means) / stds; with means 0 and stds (0.1, 0.1, 0.2, 0.2)
this is torchvision's weights (10, 10, 5, 5). `weights` given instead reproduces torchvision's arithmetic bit for bit
(targets multiplied by the weights, deltas divided by them).
"""
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

# dw, dh are clamped before exp so that a box grows at most 1000/16 times (detectron2, torchvision)
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes relative to reference boxes (anchors, proposals) and decodes them back.

    Args:
        means, stds: per-coordinate normalisation of (dx, dy, dw, dh): encoded = (t - means) / stds.
        scale_clamp: upper bound of the de-normalised dw, dh before exp.
        weights: torchvision's / detectron2's form instead of means and stds: encoded = t * weights, decoded
            deltas / weights (torchvision's RoI heads: (10, 10, 5, 5)), in their arithmetic.
    All methods broadcast over leading dimensions: boxes [..., 4] xyxy.
    """

    def __init__(self, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = DEFAULT_SCALE_CLAMP,
                 weights: Optional[Sequence[float]] = None):
        self.weights = tuple(float(w) for w in weights) if weights else None
        if self.weights is not None:
            if len(self.weights) != 4 or min(self.weights) <= 0:
                raise ValueError(f"box coder weights must be 4 positive numbers, got {weights}")
            means, stds = (0.0,) * 4, tuple(1.0 / w for w in self.weights)
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.scale_clamp = float(scale_clamp)
        self._identity = self.weights is None and all(m == 0 for m in self.means) and all(s == 1 for s in self.stds)

    def _stats(self, like: Tensor):
        return (torch.tensor(self.means, dtype=like.dtype, device=like.device),
                torch.tensor(self.stds, dtype=like.dtype, device=like.device))

    def encode(self, gt: Tensor, ref: Tensor) -> Tensor:
        """Targets that turn `ref` into `gt`: gt [..., 4], ref [..., 4] (broadcast) -> [..., 4]."""
        rw = ref[..., 2] - ref[..., 0]
        rh = ref[..., 3] - ref[..., 1]
        rx = ref[..., 0] + 0.5 * rw
        ry = ref[..., 1] + 0.5 * rh
        gw = gt[..., 2] - gt[..., 0]
        gh = gt[..., 3] - gt[..., 1]
        gx = gt[..., 0] + 0.5 * gw
        gy = gt[..., 1] + 0.5 * gh
        if self.weights is not None:
            wx, wy, ww, wh = self.weights
            return torch.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * torch.log(gw / rw),
                                wh * torch.log(gh / rh)], dim=-1)
        t = torch.stack([(gx - rx) / rw, (gy - ry) / rh, torch.log(gw / rw), torch.log(gh / rh)], dim=-1)
        if self._identity:
            return t
        means, stds = self._stats(t)
        return (t - means) / stds

    def decode(self, deltas: Tensor, ref: Tensor) -> Tensor:
        """Boxes from deltas [..., 4] applied to ref [..., 4] (broadcast) -> [..., 4] xyxy.

        For class-specific deltas [R, C * 4] use deltas.view(R, C, 4) with ref[:, None, :].
        """
        if self.weights is not None:
            deltas = deltas / torch.tensor(self.weights, dtype=deltas.dtype, device=deltas.device)
        elif not self._identity:
            means, stds = self._stats(deltas)
            deltas = deltas * stds + means
        ref = ref.to(deltas.dtype)
        rw = ref[..., 2] - ref[..., 0]
        rh = ref[..., 3] - ref[..., 1]
        rx = ref[..., 0] + 0.5 * rw
        ry = ref[..., 1] + 0.5 * rh
        cx = deltas[..., 0] * rw + rx
        cy = deltas[..., 1] * rh + ry
        w = torch.exp(deltas[..., 2].clamp(max=self.scale_clamp)) * rw
        h = torch.exp(deltas[..., 3].clamp(max=self.scale_clamp)) * rh
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)

    def __repr__(self) -> str:
        form = f"weights={self.weights}" if self.weights else f"means={self.means}, stds={self.stds}"
        return f"BoxCoder({form}, scale_clamp={self.scale_clamp:.4f})"


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """Clip boxes [B, N, 4] (or [N, 4] with image_sizes [2]) to [0, w] x [0, h] of each image.

    image_sizes: [B, 2] (height, width) of the unpadded images, any numeric dtype.
    """
    sizes = image_sizes.to(boxes.dtype)
    if boxes.dim() == 2:
        sizes = sizes.reshape(1, 2)
        hi = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=-1)  # [1, 4]
    else:
        hi = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=-1)[:, None, :]  # [B, 1, 4]
    return torch.min(boxes.clamp(min=0), hi)


def box_sides_at_least(boxes: Tensor, min_size) -> Tensor:
    """Mask [...] of boxes [..., 4] whose width and height are both >= min_size (a number or a broadcastable
    tensor, e.g. [B, 1] per image) and > 0."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return (w >= min_size) & (h >= min_size) & (w > 0) & (h > 0)
