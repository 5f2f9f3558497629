"""Image resizing: the one place that decides how big an image becomes and resamples it.

Detection (the model resizes, in training and at test time alike; see docs/architecture.md):

    scale = resize_scale(h, w, min_size, max_size, rule)        # 'py-faster-rcnn' or 'torchvision'
    nh, nw = resized_size(h, w, scale, rule)
    image = resize_image(image, (nh, nw))                       # [3, H, W] float -> [3, nh, nw], bilinear

Classification: ``resize_square`` and ``ten_crop`` (squash, or torchvision's shortest side + centre crop).

Rules (both reproduce their reference exactly):
- ``'py-faster-rcnn'`` (``prep_im_for_blob``): scale = S / short side, unless round(long side * scale) > MAX,
  then MAX / long side; new sides ``round(side * scale)`` (cv2.resize with fx = fy = scale).
- ``'torchvision'`` (``GeneralizedRCNNTransform`` in eager mode): scale = min(S / short, MAX / long); new sides
  ``floor(side * scale)`` (F.interpolate with recompute_scale_factor=True).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["RESIZE_RULES", "resize_scale", "resized_size", "resize_image", "resize_square", "ten_crop",
           "CROP_FRACTION"]

RESIZE_RULES = ("py-faster-rcnn", "torchvision")

#: torchvision's ImageNet evaluation: resize the shortest side to S / 0.875 (256 for 224), crop S x S.
CROP_FRACTION = 0.875


def _check_rule(rule: str) -> None:
    if rule not in RESIZE_RULES:
        raise ValueError(f"resize rule must be one of {list(RESIZE_RULES)}, got {rule!r}")


def resize_scale(height: int, width: int, min_size: float, max_size: float, rule: str = "py-faster-rcnn") -> float:
    """The factor bringing the shortest side to ``min_size`` with the longest side capped at ``max_size``
    (<= 0: no cap), by ``rule`` (module docstring)."""
    _check_rule(rule)
    short, long = min(height, width), max(height, width)
    if rule == "torchvision":
        return min(min_size / short, max_size / long) if max_size > 0 else min_size / short
    scale = min_size / short
    if max_size > 0 and round(long * scale) > max_size:
        scale = max_size / long
    return scale


def resized_size(height: int, width: int, scale: float, rule: str = "py-faster-rcnn") -> Tuple[int, int]:
    """(new height, new width) for ``scale`` by ``rule``: rounded (py-faster-rcnn) or floored (torchvision);
    at least 1 pixel each."""
    _check_rule(rule)
    if scale == 1.0:
        return int(height), int(width)
    if rule == "torchvision":
        return max(int(math.floor(height * scale)), 1), max(int(math.floor(width * scale)), 1)
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


def resize_image(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """[3, H, W] float -> [3, size[0], size[1]], bilinear without antialiasing (align_corners=False: the
    half-pixel rule of cv2.INTER_LINEAR and torchvision's detection transform); unchanged if already that size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def _resize_aa(image: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """[C, H, W] or [B, C, H, W] -> the same with H, W = hw (bilinear, antialiased); unchanged if already hw."""
    if tuple(image.shape[-2:]) == tuple(hw):
        return image
    if image.dim() == 3:
        return F.interpolate(image[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0]
    return F.interpolate(image, size=hw, mode="bilinear", align_corners=False, antialias=True)


def _shortest_side(image: torch.Tensor, side: int) -> torch.Tensor:
    """Shortest side to `side`, the other to int(side * long / short) (torchvision's Resize([side]) sizes)."""
    h, w = image.shape[-2:]
    short, long = min(h, w), max(h, w)
    new_long = int(side * long / short)
    return _resize_aa(image, (side, new_long) if h <= w else (new_long, side))


def _quantised(fn, image: torch.Tensor) -> torch.Tensor:
    """`fn` applied as torchvision applies it to a uint8 image: on 0..255 values, rounded back to 8 bits."""
    return fn(image * 255.0).round_().clamp_(0, 255).div_(255.0)


def resize_square(image: torch.Tensor, size: int, mode: str = "squash") -> torch.Tensor:
    """[3, H, W] (or a batch [B, 3, H, W]) float RGB 0..1 -> [3, size, size].

    ``'squash'``: both sides resized (aspect not kept, Keras), bilinear with antialiasing.
    ``'center_crop'``: torchvision's ImageNet preset (``weights.transforms()``) exactly, for an image decoded from
    8 bits: the shortest side resized to round(size / 0.875) (256 for 224) and the other to
    int(256 * long / short), bilinear with antialiasing on the 0..255 values rounded back to 8 bits, then the
    centre size x size crop at round((H - size) / 2). An image already size x size is returned as is."""
    if mode == "squash":
        return _resize_aa(image, (size, size))
    if mode != "center_crop":
        raise ValueError(f"resize mode must be 'squash' or 'center_crop', got {mode!r}")
    if tuple(image.shape[-2:]) == (size, size):
        return image
    image = _quantised(lambda x: _shortest_side(x, int(round(size / CROP_FRACTION))), image)
    h, w = image.shape[-2:]
    y0, x0 = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[..., y0:y0 + size, x0:x0 + size]


def ten_crop(image: torch.Tensor, size: int, mode: str = "squash") -> torch.Tensor:
    """[3, H, W] -> [10, 3, size, size]: the four corners and the centre of the image resized to
    round(size / 0.875) ('squash': both sides; 'center_crop': the shortest side), then their mirror images."""
    big = int(round(size / CROP_FRACTION))
    image = _resize_aa(image, (big, big)) if mode == "squash" else _shortest_side(image, big)
    h, w = image.shape[-2:]
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    crops = torch.stack([image[:, y:y + size, x:x + size] for y, x in corners])
    return torch.cat([crops, crops.flip(-1)])
