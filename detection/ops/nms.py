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
    boxes, sorted by decreasing score (equal scores: lower index first across categories).

    Exactly the union of per-category `nms` calls, at any scale: no coordinate offset (torchvision's trick rounds
    the boxes once the offset is large - 16 images x 81 classes of 1333-pixel boxes put them 1.7e6 away, where
    float32 steps are 0.125 px). Instead up to four categories share one `nms` call, mirrored into the four
    quadrants (x -> -x and/or y -> -y, which is exact and leaves every IoU bit for bit as it was, while boxes of
    different quadrants never intersect); boxes with negative coordinates get one call per category.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.argsort(idxs, stable=True)  # the boxes of each category together, in index order
    _, group, counts = torch.unique_consecutive(idxs[order], return_inverse=True, return_counts=True)
    per_call = 4 if bool(boxes.min() >= 0) and iou_threshold >= 0 else 1  # IoU 0 across quadrants must not count
    if counts.numel() == 1:
        return nms(boxes, scores, iou_threshold)
    sorted_boxes = boxes[order]
    if per_call > 1:
        quadrant = group % per_call
        sx = torch.where((quadrant & 1).bool(), -1.0, 1.0).to(boxes.dtype)[:, None]
        sy = torch.where((quadrant & 2).bool(), -1.0, 1.0).to(boxes.dtype)[:, None]
        x = torch.where(sx > 0, sorted_boxes[:, 0::2], -sorted_boxes[:, 0::2].flip(1))  # mirrored: -x2, -x1
        y = torch.where(sy > 0, sorted_boxes[:, 1::2], -sorted_boxes[:, 1::2].flip(1))
        sorted_boxes = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
    sorted_scores = scores[order]
    sizes = counts if per_call == 1 else _chunk_sums(counts, per_call).sum(1)
    kept, start = [], 0
    for n in sizes.tolist():  # one call per (up to) four categories
        kept.append(nms(sorted_boxes[start:start + n], sorted_scores[start:start + n], iou_threshold) + start)
        start += n
    keep = order[torch.cat(kept)].sort().values  # index order, so that equal scores resolve by index
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def _chunk_sums(counts: Tensor, k: int) -> Tensor:
    """counts [G] zero-padded and reshaped to [ceil(G / k), k]: the groups that share one call, per row."""
    pad = (-counts.numel()) % k
    return torch.cat([counts, counts.new_zeros(pad)]).reshape(-1, k)
