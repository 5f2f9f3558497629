"""Box utilities on xyxy tensors (continuous coordinates: width = x2 - x1).

The toolkit's one torch IoU; the VOC devkit's inclusive-pixel IoU on numpy arrays (for evaluation, and with
``pixel_offset=0`` the same continuous IoU without torch) is `detection.evaluation.voc_ap.bbox_overlaps`.
"""
import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """boxes: [..., N, 4] xyxy -> [..., N] areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of boxes1 [N, 4] and boxes2 [M, 4] (xyxy) -> [N, M]; like torchvision.ops.box_iou.

    Leading batch dimensions are allowed: [B, N, 4] and [B, M, 4] -> [B, N, M], image by image (padded ground
    truth of a batch). As torchvision, two empty boxes give NaN (0 / 0); callers mask padding.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)
