"""RoIPool (Fast R-CNN) with torchvision.ops' signatures."""
from typing import List, Tuple, Union

import torch
from torch import Tensor, nn

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import as_pair, autocast_to_float, check_roi_inputs, convert_boxes_to_roi_format


def roi_pool(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Max-pooled features of each box over a quantised grid of bins.

    input: [B, C, H, W]; boxes: [K, 5] (batch_index, x1, y1, x2, y2) or a list of per-image [L, 4] xyxy in image
    coordinates. Returns [K, C, output_size[0], output_size[1]]; empty bins give 0. Under autocast it computes in
    float32 and returns the input's dtype (torchvision's rule).
    """
    if USE_TORCHVISION:
        import torchvision

        return torchvision.ops.roi_pool(input, boxes, output_size, spatial_scale)
    dtype = input.dtype
    input, rois = autocast_to_float(input, convert_boxes_to_roi_format(boxes))
    check_roi_inputs(input, rois)
    ph, pw = as_pair(output_size)
    output, _ = torch.ops.detection.roi_pool(input, rois, float(spatial_scale), ph, pw)
    return output.to(dtype)


class RoIPool(nn.Module):
    """Module form of `roi_pool`."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
