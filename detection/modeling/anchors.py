"""Anchors of the Region Proposal Network (py-faster-rcnn's `generate_anchors`, continuous coordinates).

Convention: boxes are xyxy in continuous pixel coordinates (pixel i covers [i, i+1), width = x2 - x1).
py-faster-rcnn's anchors are in inclusive integer pixels (width = x2 - x1 + 1); the same boxes here are
theirs + [0, 0, 1, 1]: its first base anchor [-84, -40, 99, 55] is [-84, -40, 100, 56] here (184 x 96,
centred on (8, 8), the centre of the first 16x16 cell). Ratio enumeration comes first, then scale
enumeration, with py-faster-rcnn's rounding of the widths/heights, so the 9 default anchors are exactly theirs.

Placement 'torchvision' (`TorchvisionAnchorGenerator`, the anchors of torchvision's detectors and their weights):
cell anchors of side `size` / sqrt(ratio) by `size` * sqrt(ratio) centred on (0, 0), i.e. on the cell's top-left
corner, rounded to whole pixels; the stride of a level is the padded batch size // the feature size, per axis.
A pyramid (FPN) has one generator per level (`MultiLevelAnchorGenerator`), anchors concatenated finest first.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detection.ops.shapes import Size, tracing


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


def grid_anchors(base_anchors: Tensor, height: Size, width: Size, stride_y: Size, stride_x: Size,
                 device: torch.device, dtype: torch.dtype) -> Tensor:
    """The anchors of an H x W feature map whose cells are (stride_y, stride_x) pixels apart: [H * W * A, 4] xyxy,
    location-major (row y, then column x), then the A base anchors [A, 4] shifted by (stride_x * x, stride_y * y).

    The one grid of both placements, eager and traced (sizes and strides: ints, or 0-d tensors / symbolic ints
    under a tracer, detection/ops/shapes.py). Computed in float64 and cast to `dtype` once."""
    sx = torch.arange(width, dtype=torch.float64, device=device) * stride_x
    sy = torch.arange(height, dtype=torch.float64, device=device) * stride_y
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    base = base_anchors.to(device=device, dtype=torch.float64)
    return (shifts + base[None]).reshape(-1, 4).to(dtype)


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

    def _cached(self, key: tuple, make) -> Tensor:
        """The anchors for `key` (sizes, strides, device, dtype), made once; none are kept while tracing."""
        if tracing():
            return make()
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = make()
            if len(self._cache) > 64:  # many input sizes (multi-scale training): keep memory bounded
                self._cache.clear()
            self._cache[key] = anchors
        return anchors

    def grid_anchors(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Anchors of an H x W feature map: [H * W * A, 4] (cached; do not modify in place)."""
        return self._cached((height, width, torch.device(device), dtype), lambda: grid_anchors(
            self.base_anchors, height, width, self.stride, self.stride, device, dtype))

    def forward(self, features: Tensor, image_size: Optional[Sequence[int]] = None) -> Tensor:
        """features: [B, C, H, W] -> anchors [H * W * A, 4], shared by every image of the padded batch
        (image_size, the padded batch's (H, W), is not needed: the stride is fixed)."""
        h, w = features.shape[-2:]
        return self.grid_anchors(h, w, features.device, features.dtype)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, scales={self.scales}, ratios={self.ratios}"


def torchvision_cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """torchvision's AnchorGenerator.generate_anchors: float32 [len(ratios) * len(sizes), 4] xyxy centred on 0,
    rounded (ratio-major: index = ratio_index * len(sizes) + size_index; ratio = h / w)."""
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class TorchvisionAnchorGenerator(AnchorGenerator):
    """One level's anchors with torchvision's placement (module docstring): [H * W * A, 4] xyxy.

    Args:
        sizes: anchor sides in input pixels (one per level in torchvision's FPN: 32, 64, 128, 256 or 512).
        ratios: aspect ratios h / w. stride: the nominal stride (reported only; the real one comes from the
            padded batch size // feature size, torchvision's rule, so a ceil-sized top level gets a smaller one).
    """

    def __init__(self, sizes: Sequence[float] = (32,), ratios: Sequence[float] = (0.5, 1.0, 2.0), stride: int = 0):
        nn.Module.__init__(self)
        self.stride = int(stride)
        self.sizes = tuple(float(s) for s in sizes)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = self.sizes
        self.base_anchors = torchvision_cell_anchors(self.sizes, self.ratios)
        self._cache: Dict[tuple, Tensor] = {}

    def grid_anchors_with_stride(self, height: int, width: int, stride_hw: Tuple[int, int], device: torch.device,
                                 dtype: torch.dtype) -> Tensor:
        """Anchors of an H x W map whose cells are stride_hw = (sy, sx) pixels apart (cached)."""
        sy, sx = stride_hw
        return self._cached((height, width, sy, sx, torch.device(device), dtype), lambda: grid_anchors(
            self.base_anchors, height, width, sy, sx, device, dtype))

    def forward(self, features: Tensor, image_size: Optional[Sequence[int]] = None) -> Tensor:
        """features [B, C, H, W]; image_size: the padded batch's (H, W) (required)."""
        if image_size is None:
            raise ValueError("TorchvisionAnchorGenerator needs the padded image size")
        h, w = features.shape[-2:]
        stride = (image_size[0] // h, image_size[1] // w)  # ints eagerly; sizes stay symbolic under a tracer
        return self.grid_anchors_with_stride(h, w, stride, features.device, features.dtype)

    def extra_repr(self) -> str:
        return f"placement=torchvision, sizes={self.sizes}, ratios={self.ratios}, stride={self.stride}"


class MultiLevelAnchorGenerator(nn.Module):
    """One generator per feature level (all with the same number A of anchors per location).

    forward(levels: list of [B, C, H_l, W_l], image_size (H, W) of the padded batch) -> list of [H_l*W_l*A, 4]
    (one [B, C, H, W] tensor instead of a list: its [H*W*A, 4] anchors, for a one-level generator).
    """

    def __init__(self, generators: Sequence[AnchorGenerator]):
        super().__init__()
        self.generators = nn.ModuleList(generators)
        counts = {g.num_anchors_per_location for g in self.generators}
        if len(counts) != 1:
            raise ValueError(f"every level needs the same number of anchors per location (one RPN head), got {counts}")

    @property
    def num_anchors_per_location(self) -> int:
        return self.generators[0].num_anchors_per_location

    def forward(self, levels, image_size: Optional[Sequence[int]] = None):
        if isinstance(levels, Tensor):
            return self.forward([levels], image_size)[0]
        if len(levels) != len(self.generators):
            raise ValueError(f"{len(levels)} feature levels for {len(self.generators)} anchor generators")
        return [g(f, image_size) for g, f in zip(self.generators, levels)]


def build_anchor_generator(placement: str, strides: Sequence[int], sizes: Sequence[Sequence[float]],
                           ratios: Sequence[float]) -> MultiLevelAnchorGenerator:
    """Generators for levels of `strides`, level l with anchor sides `sizes[l]` (px) and `ratios`.

    placement 'py-faster-rcnn': centred on the cell centre, py-faster-rcnn's rounding (base size = the stride);
    'torchvision': torchvision's (module docstring)."""
    if len(sizes) != len(strides):
        raise ValueError(f"{len(sizes)} anchor size groups for {len(strides)} feature levels (strides {list(strides)})")
    if placement == "py-faster-rcnn":
        gens = [AnchorGenerator(s, [z / s for z in zs], ratios) for s, zs in zip(strides, sizes)]
    elif placement == "torchvision":
        gens = [TorchvisionAnchorGenerator(zs, ratios, s) for s, zs in zip(strides, sizes)]
    else:
        raise ValueError(f"anchor placement must be 'py-faster-rcnn' or 'torchvision', got {placement!r}")
    return MultiLevelAnchorGenerator(gens)
