"""RoIAlign (Mask R-CNN) with torchvision.ops' signatures."""
from typing import List, Tuple, Union

import torch
from torch import Tensor, nn

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import as_pair, autocast_to_float, check_roi_inputs, convert_boxes_to_roi_format


def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Bilinearly sampled, average-pooled features of each box.

    input: [B, C, H, W]; boxes: [K, 5] (batch_index, x1, y1, x2, y2) or a list of per-image [L, 4] xyxy, in
    image coordinates (multiplied by spatial_scale to reach the feature map). sampling_ratio <= 0 samples
    ceil(roi_size / output_size) points per bin. aligned=True shifts boxes by -0.5 pixel (pixel-centre model).
    Returns [K, C, output_size[0], output_size[1]]. Under autocast it computes in float32 and returns the
    input's dtype (torchvision's rule).
    """
    if USE_TORCHVISION:
        import torchvision

        return torchvision.ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    dtype = input.dtype
    input, rois = autocast_to_float(input, convert_boxes_to_roi_format(boxes))
    check_roi_inputs(input, rois)
    ph, pw = as_pair(output_size)
    return torch.ops.detection.roi_align(
        input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned)
    ).to(dtype)


class RoIAlign(nn.Module):
    """Module form of `roi_align`."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool = False):
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
