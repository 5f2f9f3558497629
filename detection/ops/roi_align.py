"""RoIAlign (Mask R-CNN) with torchvision.ops' signatures; scriptable (TorchScript) and a leaf of torch.fx traces."""
from typing import List, Union

import torch
from torch import Tensor, nn
from torch.jit.annotations import BroadcastingList2
from torch.nn.modules.utils import _pair

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import (autocast_to_float, check_pair, check_roi_boxes_shape, check_roi_inputs,
                                  convert_boxes_to_roi_format)


@torch.fx.wrap
def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Bilinearly sampled, average-pooled features of each box.

    input: [B, C, H, W] (float16, bfloat16, float32, float64; quantized per tensor); boxes: [K, 5] (batch_index,
    x1, y1, x2, y2) or a list of per-image [L, 4] xyxy, in image coordinates (multiplied by spatial_scale to reach
    the feature map), of input's dtype. sampling_ratio <= 0 samples ceil(roi_size / output_size) points per bin.
    aligned=True shifts boxes by -0.5 pixel (pixel-centre model). Returns [K, C, output_size[0], output_size[1]]
    in input's dtype (float16 / bfloat16 computed in float32). Under autocast it computes in float32 and returns
    the input's dtype (torchvision's rule). A bad boxes shape raises BoxShapeError (a ValueError and an
    AssertionError, which torchvision raises).
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
    return torch.ops.detection.roi_align(input, rois, float(spatial_scale), size[0], size[1], int(sampling_ratio),
                                         bool(aligned)).to(dtype)


class RoIAlign(nn.Module):
    """Module form of `roi_align`."""

    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool = False):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


if USE_TORCHVISION:  # torchvision.ops' own function (DETECTION_OPS=torchvision)
    from torchvision.ops import roi_align  # noqa: E402,F401,F811
