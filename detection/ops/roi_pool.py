"""RoIPool (Fast R-CNN) with torchvision.ops' signatures; scriptable (TorchScript) and a leaf of torch.fx traces."""
from typing import List, Union

import torch
from torch import Tensor, nn
from torch.jit.annotations import BroadcastingList2
from torch.nn.modules.utils import _pair

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import (autocast_to_float, check_pair, check_roi_boxes_shape, check_roi_inputs,
                                  convert_boxes_to_roi_format)


@torch.fx.wrap
def roi_pool(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Max-pooled features of each box over a quantised grid of bins.

    input: [B, C, H, W] (float16, bfloat16, float32, float64; quantized per tensor); boxes: [K, 5] (batch_index,
    x1, y1, x2, y2) or a list of per-image [L, 4] xyxy in image coordinates, of input's dtype. Returns
    [K, C, output_size[0], output_size[1]] in input's dtype; empty bins give 0. Under autocast it computes in
    float32 and returns the input's dtype (torchvision's rule). A bad boxes shape raises BoxShapeError.
    """
    check_roi_boxes_shape(boxes)
    rois = boxes
    if not isinstance(rois, Tensor):
        rois = convert_boxes_to_roi_format(rois)
    size = _pair(output_size)
    dtype = input.dtype
    if not torch.jit.is_scripting():
        check_pair(size)
        input, rois = autocast_to_float(input, rois)
        check_roi_inputs(input, rois)
    output, _ = torch.ops.detection.roi_pool(input, rois, float(spatial_scale), size[0], size[1])
    return output.to(dtype)


class RoIPool(nn.Module):
    """Module form of `roi_pool`."""

    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


if USE_TORCHVISION:  # torchvision.ops' own function (DETECTION_OPS=torchvision)
    from torchvision.ops import roi_pool  # noqa: E402,F401,F811
