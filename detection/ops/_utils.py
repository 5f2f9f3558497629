"""Shared argument handling for the RoI ops (torchvision's conventions)."""
from typing import List, Tuple, Union

import torch
from torch import Tensor


def as_pair(size: Union[int, Tuple[int, int], List[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or a pair (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def convert_boxes_to_roi_format(boxes: Union[Tensor, List[Tensor]]) -> Tensor:
    """A list of per-image [L_i, 4] boxes -> one [K, 5] tensor (batch_index, x1, y1, x2, y2)."""
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise ValueError(f"boxes as a Tensor must be [K, 5] (batch_index, x1, y1, x2, y2), got {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 4:
            raise ValueError(f"boxes[{i}] must be [L, 4] xyxy, got {tuple(b.shape)}")
    concat = torch.cat(list(boxes), dim=0)
    index = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([index, concat], dim=1)


def check_roi_inputs(input: Tensor, rois: Tensor) -> None:
    if input.dim() != 4:
        raise ValueError(f"input must be [B, C, H, W], got {tuple(input.shape)}")
    if rois.dtype != input.dtype:
        raise TypeError(f"boxes dtype {rois.dtype} must match input dtype {input.dtype}")
    if rois.device != input.device:
        raise ValueError(f"boxes on {rois.device} but input on {input.device}")


def autocast_to_float(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """Under autocast (mixed precision), the ops run in float32 like torchvision's autocast kernels: half or
    bfloat16 features and float32 boxes are both cast to float32 (callers cast results back to the feature dtype).
    Outside autocast the tensors are returned unchanged (mismatched dtypes are then an error)."""
    t0 = tensors[0]
    if not torch.is_autocast_enabled(t0.device.type):
        return tensors
    return tuple(t.float() if t.is_floating_point() else t for t in tensors)
