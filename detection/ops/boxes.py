"""Box utilities on xyxy tensors (continuous coordinates: width = x2 - x1), torchvision.ops' arithmetic.

The toolkit's one torch IoU; the VOC devkit's inclusive-pixel IoU on numpy arrays (for evaluation, and with
``pixel_offset=0`` the same continuous IoU without torch) is `detection.evaluation.voc_ap.bbox_overlaps`.
Like torchvision, products are taken in a wider type so that they cannot overflow: float16 / bfloat16 -> float32,
int8 / int16 / uint8 -> int32 (`_upcast`); float32, float64, int32 and int64 are used as they are.
"""
import torch
from torch import Tensor


def _upcast(t: Tensor) -> Tensor:
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor) -> Tensor:
    """boxes: [..., N, 4] xyxy -> [..., N] areas (float16 -> float32, small ints -> int32)."""
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of boxes1 [N, 4] and boxes2 [M, 4] (xyxy) -> [N, M]; torchvision.ops.box_iou's numbers (bit for
    bit in float32 / float64; float16 and integer boxes give float32 IoUs as torchvision's do).

    Leading batch dimensions are allowed: [B, N, 4] and [B, M, 4] -> [B, N, M], image by image (padded ground
    truth of a batch). As torchvision, two empty boxes give NaN (0 / 0); callers mask padding.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)
