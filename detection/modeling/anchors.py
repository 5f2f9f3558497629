"""Anchors of the Region Proposal Network (py-faster-rcnn's `generate_anchors`, continuous coordinates).

Convention: boxes are xyxy in continuous pixel coordinates (pixel i covers [i, i+1), width = x2 - x1).
py-faster-rcnn's anchors are in inclusive integer pixels (width = x2 - x1 + 1); the same boxes here are
theirs + [0, 0, 1, 1]: its first base anchor [-84, -40, 99, 55] is [-84, -40, 100, 56] here (184 x 96,
centred on (8, 8), the centre of the first 16x16 cell). Ratio enumeration comes first, then scale
enumeration, with py-faster-rcnn's rounding of the widths/heights, so the 9 default anchors are exactly theirs.
"""
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor, nn


def generate_base_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1.0, 2.0),
                          scales: Sequence[float] = (8, 16, 32)) -> Tensor:
    """The A = len(ratios) * len(scales) anchors of the cell [0, base_size)^2, as float64 [A, 4] xyxy.

    Order: ratio-major (index = ratio_index * len(scales) + scale_index), as py-faster-rcnn. ratio = h / w.
    """
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    scales = torch.as_tensor(scales, dtype=torch.float64)
    size = float(base_size * base_size)
    # ratio enumeration, rounded to whole pixels like py-faster-rcnn (np.round: half to even, as torch.round)
    ws = torch.round(torch.sqrt(size / ratios))
    hs = torch.round(ws * ratios)
    # scale enumeration
    ws = (ws[:, None] * scales[None, :]).reshape(-1)
    hs = (hs[:, None] * scales[None, :]).reshape(-1)
    ctr = 0.5 * base_size
    return torch.stack([ctr - 0.5 * ws, ctr - 0.5 * hs, ctr + 0.5 * ws, ctr + 0.5 * hs], dim=1)


class AnchorGenerator(nn.Module):
    """All anchors of a stride-`stride` feature map: [H * W * A, 4] xyxy in input-image pixels.

    Order: location-major (row y, then column x), then the A base anchors, matching the RPN head's
    [B, A, H, W] -> [B, H, W, A] flattening. The base anchors are shifted by (stride * x, stride * y), so each
    is centred on its cell's centre. Results are cached per (H, W, device, dtype).

    Args:
        stride: feature stride in input pixels (also py-faster-rcnn's base size unless `base_size` is given).
        scales: anchor sizes in units of base_size (8, 16, 32 -> 128, 256, 512 px at base 16).
        ratios: aspect ratios h / w.
    """

    def __init__(self, stride: int = 16, scales: Sequence[float] = (8, 16, 32),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), base_size: int = 0):
        super().__init__()
        self.stride = int(stride)
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.base_anchors = generate_base_anchors(base_size or self.stride, self.ratios, self.scales)
        self._cache: Dict[Tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return self.base_anchors.shape[0]

    def grid_anchors(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Anchors of an H x W feature map: [H * W * A, 4] (cached; do not modify in place)."""
        key = (int(height), int(width), torch.device(device), dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            sx = torch.arange(width, dtype=torch.float64) * self.stride
            sy = torch.arange(height, dtype=torch.float64) * self.stride
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            anchors = (shifts + self.base_anchors[None]).reshape(-1, 4).to(device=device, dtype=dtype)
            if len(self._cache) > 64:  # many input sizes (multi-scale training): keep memory bounded
                self._cache.clear()
            self._cache[key] = anchors
        return anchors

    def forward(self, features: Tensor) -> Tensor:
        """features: [B, C, H, W] -> anchors [H * W * A, 4], shared by every image of the padded batch."""
        h, w = features.shape[-2:]
        return self.grid_anchors(h, w, features.device, features.dtype)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, scales={self.scales}, ratios={self.ratios}"
