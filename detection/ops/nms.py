"""Non-maximum suppression with torchvision.ops' signatures."""
import torch
from torch import Tensor

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import autocast_to_float


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: drop boxes whose IoU with a higher-scoring kept box is > iou_threshold.

    boxes: [N, 4] xyxy (x1 < x2, y1 < y2); scores: [N]. Returns int64 indices of the kept boxes,
    sorted by decreasing score.
    """
    if USE_TORCHVISION:
        import torchvision

        return torchvision.ops.nms(boxes, scores, iou_threshold)
    boxes, scores = autocast_to_float(boxes, scores)
    return torch.ops.detection.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS run independently per category: boxes of different `idxs` never suppress each other.

    boxes: [N, 4] xyxy; scores: [N]; idxs: [N] int64 category of each box. Returns int64 indices of the kept
    boxes, sorted by decreasing score. torchvision.ops.batched_nms's computation, bit for bit: up to 1000 boxes on
    the CPU (5000 on CUDA) each category's boxes are offset by a distinct amount so that one NMS call handles all
    of them; above, one NMS per category present (IoUs of the raw coordinates; a loop over categories, not boxes).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20000) and not torch.jit.is_tracing():
        return _batched_nms_per_category(boxes, scores, idxs, iou_threshold)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_per_category(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        curr = torch.where(idxs == class_id)[0]
        keep_mask[curr[nms(boxes[curr], scores[curr], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]
