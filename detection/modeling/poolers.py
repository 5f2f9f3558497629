"""RoI feature extraction from a feature pyramid: each RoI pooled by RoIAlign from the level its size maps to.

Level of a box of area A (FPN paper eq. 1, torchvision's LevelMapper, bit for bit):
    k = floor(4 + log2(sqrt(A) / 224) + 1e-6), clamped to the pooled levels' [k_min, k_max] (k = log2 stride)
so a 224 x 224 box reads P4, a 112 x 112 one P3. One `detection.ops.roi_align` call per level on the RoIs of that
level (a handful of calls, no per-RoI work).
"""
from typing import Mapping, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from detection.ops import roi_align
from detection.ops.shapes import tracing

__all__ = ["map_roi_levels", "MultiScaleRoIAlign"]


def map_roi_levels(boxes: Tensor, k_min: int, k_max: int, canonical_scale: float = 224.0,
                   canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """boxes [R, 4] xyxy (input-image pixels) -> [R] int64 level index counted from k_min (0 = finest)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    k = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    k = torch.clamp(k, min=k_min, max=k_max)
    return k.to(torch.int64) - k_min


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over pyramid levels (torchvision's MultiScaleRoIAlign with known strides).

    Args:
        level_names: the feature levels pooled from, finest first (e.g. p2..p5). strides: theirs (powers of 2).
        output_size: P (or (Ph, Pw)). sampling_ratio, aligned: RoIAlign's (torchvision's detectors: 2, False).
        canonical_scale, canonical_level: the level mapping's 224 and 4.
    forward(features: name -> [B, C, H_l, W_l], rois [R, 5] (batch index, x1, y1, x2, y2)) -> [R, C, Ph, Pw].
    """

    def __init__(self, level_names: Sequence[str], strides: Sequence[int], output_size: Union[int, Tuple[int, int]],
                 sampling_ratio: int = 2, aligned: bool = False, canonical_scale: float = 224.0,
                 canonical_level: int = 4):
        super().__init__()
        if len(level_names) != len(strides) or not level_names:
            raise ValueError(f"level_names {list(level_names)} and strides {list(strides)} must pair up")
        ks = [int(s).bit_length() - 1 for s in strides]
        if any(2 ** k != int(s) for k, s in zip(ks, strides)) or ks != list(range(ks[0], ks[0] + len(ks))):
            raise ValueError(f"pyramid strides must be consecutive powers of 2, got {list(strides)}")
        self.level_names = list(level_names)
        self.scales = [1.0 / int(s) for s in strides]
        self.k_min, self.k_max = ks[0], ks[-1]
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.canonical_scale = float(canonical_scale)
        self.canonical_level = int(canonical_level)

    def forward(self, features: Mapping[str, Tensor], rois: Tensor) -> Tensor:
        feats = [features[n] for n in self.level_names]
        if len(feats) == 1:
            return roi_align(feats[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        levels = map_roi_levels(rois[:, 1:], self.k_min, self.k_max, self.canonical_scale, self.canonical_level)
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1]) + self.output_size)
        if tracing():
            for lvl, (feat, scale) in enumerate(zip(feats, self.scales)):
                idx = torch.where(levels == lvl)[0]
                # every level pooled, possibly on no RoI, so that the graph holds every level; a scatter
                # (ScatterElements) rather than out[idx] = ...: the exporter's index_put fixes the values' shape
                pooled = roi_align(feat, rois[idx], self.output_size, scale, self.sampling_ratio, self.aligned)
                out = out.scatter(0, idx.view(-1, 1, 1, 1).expand_as(pooled), pooled.to(out.dtype))
            return out
        # the RoIs sorted by level (stably: each level's in their order), split by one host read of the counts
        order = torch.argsort(levels, stable=True)
        counts = torch.zeros(len(feats), dtype=torch.int64, device=levels.device)
        counts = counts.index_add_(0, levels, torch.ones_like(levels)).tolist()
        pooled = [roi_align(feat, chunk, self.output_size, scale, self.sampling_ratio, self.aligned).to(out.dtype)
                  for feat, scale, chunk in zip(feats, self.scales, rois[order].split(counts)) if chunk.shape[0]]
        if pooled:
            out[order] = torch.cat(pooled)
        return out

    def extra_repr(self) -> str:
        return (f"levels={self.level_names}, output_size={self.output_size}, sampling_ratio={self.sampling_ratio}, "
                f"aligned={self.aligned}")
