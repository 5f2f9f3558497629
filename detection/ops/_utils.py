"""Shared argument handling for the RoI ops (torchvision's conventions), scriptable with TorchScript."""
from typing import List, Tuple, Union

import torch
from torch import Tensor

from detection.ops.errors import BoxShapeError, BoxTypeError, RoiDtypeError, RoiInputError


def check_roi_boxes_shape(boxes: Union[Tensor, List[Tensor]]) -> None:
    """boxes must be a [K, 5] tensor (batch_index, x1, y1, x2, y2) or a list / tuple of per-image [L, 4] xyxy."""
    if not torch.jit.is_scripting():
        if not isinstance(boxes, (Tensor, list, tuple)):
            raise BoxTypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise BoxShapeError(f"boxes as a Tensor must be [K, 5] (batch_index, x1, y1, x2, y2), got "
                                f"{list(boxes.shape)}")
    else:
        for i, b in enumerate(boxes):
            if b.dim() != 2 or b.size(1) != 4:
                raise BoxShapeError(f"boxes[{i}] must be [L, 4] xyxy, got {list(b.shape)}")


def convert_boxes_to_roi_format(boxes: List[Tensor]) -> Tensor:
    """A list of per-image [L_i, 4] boxes -> one [K, 5] tensor (batch_index, x1, y1, x2, y2)."""
    index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index, dim=0), torch.cat(boxes, dim=0)], dim=1)


def check_pair(size: List[int]) -> None:
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or a pair (height, width), got {size!r}")


def check_roi_inputs(input: Tensor, rois: Tensor) -> None:
    if input.dim() != 4:
        raise RoiInputError(f"input must be [B, C, H, W], got {tuple(input.shape)}")
    if rois.dtype != input.dtype:
        raise RoiDtypeError(f"boxes dtype {rois.dtype} must match input dtype {input.dtype}")
    if rois.device != input.device:
        raise RoiInputError(f"boxes on {rois.device} but input on {input.device}")


def autocast_to_float(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """Under autocast (mixed precision), the ops run in float32 like torchvision's autocast kernels: half or
    bfloat16 features and float32 boxes are both cast to float32 (callers cast results back to the feature dtype).
    Outside autocast the tensors are returned unchanged (mismatched dtypes are then an error)."""
    t0 = tensors[0]
    if not torch.is_autocast_enabled(t0.device.type):
        return tensors
    return tuple(t.float() if t.is_floating_point() else t for t in tensors)
