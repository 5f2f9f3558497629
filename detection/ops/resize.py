"""Image resizing: the one place that decides how big an image becomes and resamples it.

Detection (the model resizes, in training and at test time alike; see docs/architecture.md):

    new, scale = resize_size(torch.tensor([h, w]), min_size, max_size, rule)   # int64 [2], float64 []
    image = resize_image(image, (nh, nw))                       # [3, H, W] float -> [3, nh, nw], bilinear
    (resize_scale / resized_size: the same rule on Python numbers)

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

from detection.ops.shapes import as_size, shape, tracing

__all__ = ["RESIZE_RULES", "resize_size", "resize_scale", "resized_size", "resize_image", "resize_square",
           "ten_crop", "CROP_FRACTION"]

RESIZE_RULES = ("py-faster-rcnn", "torchvision")

#: torchvision's ImageNet evaluation: resize the shortest side to S / 0.875 (256 for 224), crop S x S.
CROP_FRACTION = 0.875


def _check_rule(rule: str) -> None:
    if rule not in RESIZE_RULES:
        raise ValueError(f"resize rule must be one of {list(RESIZE_RULES)}, got {rule!r}")


def resize_size(hw: torch.Tensor, min_size: float, max_size: float, rule: str = "py-faster-rcnn"
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The detector resize for an image of size hw (int64 or float64 [2] tensor, (h, w)): (new size int64 [2],
    scale float64 []), by ``rule`` (module docstring).

    The one implementation of the rule, eager and traced alike: float64 tensor operations are the same IEEE
    operations as Python floats (round half to even, floor), so the sizes are those of the references for every
    input size, and a traced graph computes them from the input's shape (detection/ops/shapes.py)."""
    _check_rule(rule)
    hw = hw.to(torch.float64)
    ends = torch.stack([hw.min(), hw.max()])  # [2] (short, long)
    # IEEE divisions, on [1]-shaped tensors throughout: number / tensor is reciprocal() * number in torch, and the
    # ONNX exporter computes arithmetic between two 0-d tensors in float32
    ratios = torch.tensor([float(min_size), float(max_size)], dtype=torch.float64, device=hw.device) / ends
    scale, cap, long = ratios[:1], ratios[1:], ends[1:]
    if rule == "torchvision":
        if max_size > 0:
            scale = torch.minimum(scale, cap)
        new = torch.floor(hw * scale)
    else:
        if max_size > 0:
            scale = torch.where(torch.round(long * scale) > max_size, cap, scale)
        new = torch.round(hw * scale)
    new = torch.where(scale == 1.0, hw, new)
    return new.clamp(min=1).to(torch.int64), scale.reshape(())


def resize_scale(height: int, width: int, min_size: float, max_size: float, rule: str = "py-faster-rcnn") -> float:
    """The factor bringing the shortest side to ``min_size`` with the longest side capped at ``max_size``
    (<= 0: no cap), by ``rule`` (module docstring); resize_size's, as a Python float."""
    return float(resize_size(torch.tensor([height, width]), min_size, max_size, rule)[1])


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
    if mode not in ("squash", "center_crop"):
        raise ValueError(f"resize mode must be 'squash' or 'center_crop', got {mode!r}")
    if tracing():
        return _resize_square_traced(image, size, mode)
    if mode == "squash":
        return _resize_aa(image, (size, size))
    if tuple(image.shape[-2:]) == (size, size):
        return image
    image = _quantised(lambda x: _shortest_side(x, int(round(size / CROP_FRACTION))), image)
    h, w = image.shape[-2:]
    y0, x0 = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[..., y0:y0 + size, x0:x0 + size]


# -- the square resize as a traced graph computes it ------------------------------------------------------------------
# Antialiased resizing becomes two weight matrices built in the graph from the input's size (PyTorch's triangle
# filter): ONNX Resize-18's `antialias` differs from PyTorch's by up to ~1e-3 on strong downscales, the matrices by
# ~1e-7. Sizes are tensors (detection/ops/shapes.py), so the graph takes any input size.
def _aa_weights(in_size: torch.Tensor, out_size, device) -> torch.Tensor:
    """[out, in] weights of PyTorch's antialiased bilinear resize along one axis (interpolate antialias=True,
    align_corners=False): a triangle filter widened by the downscale factor, each row normalised to sum 1."""
    scale = in_size.to(torch.float32) / torch.as_tensor(out_size).to(torch.float32)
    inv = 1.0 / torch.clamp(scale, min=1.0)
    center = scale * (torch.arange(as_size(torch.as_tensor(out_size)), device=device).to(torch.float32) + 0.5)
    pos = torch.arange(as_size(in_size), device=device).to(torch.float32) + 0.5
    w = (1.0 - ((pos[None, :] - center[:, None]) * inv).abs()).clamp(min=0.0)
    return w / w.sum(dim=1, keepdim=True)


def _resize_aa_traced(x: torch.Tensor, out_h, out_w) -> torch.Tensor:
    """[..., H, W] -> [..., out_h, out_w], antialiased bilinear as matrix products (sizes: ints or 0-d tensors)."""
    hw = shape(x, (-2, -1))
    wh = _aa_weights(hw[0], out_h, x.device)
    ww = _aa_weights(hw[1], out_w, x.device)
    return torch.matmul(torch.matmul(wh, x), ww.t())


def _resize_square_traced(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """resize_square with the sizes computed in the graph: the same sizes, crop offsets and 8-bit rounding."""
    if mode == "squash":
        return _resize_aa_traced(x, size, size)
    side = float(round(size / CROP_FRACTION))
    hw = shape(x, (-2, -1)).to(torch.float64)
    short, long = hw.min().reshape(1), hw.max().reshape(1)  # [1]: no arithmetic between 0-d tensors (resize_size)
    new_long = torch.floor(side * long / short)  # int(side * long / short)
    side_t = torch.full_like(new_long, side)
    new = torch.where(hw[:1] <= hw[1:], torch.cat([side_t, new_long]), torch.cat([new_long, side_t]))
    # an image already S x S is returned as it is: resized to its own size, not quantised, cropped at 0
    as_is = (hw == float(size)).all()
    new = torch.where(as_is, hw, new).to(torch.int64)
    resized = _resize_aa_traced(x * 255.0, new[0], new[1])
    x = torch.where(as_is, resized / 255.0, resized.round().clamp(0.0, 255.0) / 255.0)  # 8-bit values
    y0 = torch.round((new[0] - size).to(torch.float64) / 2.0).to(torch.int64)
    x0 = torch.round((new[1] - size).to(torch.float64) / 2.0).to(torch.int64)
    rows = torch.arange(size, device=x.device) + y0
    cols = torch.arange(size, device=x.device) + x0
    return x.index_select(-2, rows).index_select(-1, cols)


def ten_crop(image: torch.Tensor, size: int, mode: str = "squash") -> torch.Tensor:
    """[3, H, W] -> [10, 3, size, size]: the four corners and the centre of the image resized to
    round(size / 0.875) ('squash': both sides; 'center_crop': the shortest side), then their mirror images."""
    big = int(round(size / CROP_FRACTION))
    image = _resize_aa(image, (big, big)) if mode == "squash" else _shortest_side(image, big)
    h, w = image.shape[-2:]
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    crops = torch.stack([image[:, y:y + size, x:x + size] for y, x in corners])
    return torch.cat([crops, crops.flip(-1)])
