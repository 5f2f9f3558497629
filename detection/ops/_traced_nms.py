"""`batched_nms` for a traced graph while no class-aware NMS kernel exists: a loop the graph can hold.

Exactly one `nms` per group, four groups per call mirrored into the four quadrants (x -> -x and/or y -> -y: exact,
every IoU unchanged, boxes of different quadrants never intersect), one call per four groups whether or not they
have boxes: the number of groups must be known when tracing. The result is batched_nms's (same indices, same
order), for boxes >= 0 (clipped ones) and iou >= 0.
"""
import torch
from torch import Tensor

from detection.ops.nms import nms

__all__ = ["batched_nms_static"]


def batched_nms_static(boxes: Tensor, scores: Tensor, groups: Tensor, iou: float, num_groups: int) -> Tensor:
    """boxes [N, 4] xyxy >= 0, scores [N], groups [N] int64 in 0..num_groups-1 -> kept indices by decreasing score,
    equal scores by lower index."""
    if num_groups == 1:
        return nms(boxes, scores, iou)
    index = torch.arange(scores.shape[0], device=scores.device)
    kept = []
    for chunk in range((num_groups + 3) // 4):
        sel = torch.where(groups // 4 == chunk)[0]
        b, quadrant = boxes[sel], groups[sel] % 4
        x = torch.where((quadrant % 2 == 1)[:, None], -b[:, 0::2].flip(1), b[:, 0::2])  # mirrored: -x2, -x1
        y = torch.where((quadrant >= 2)[:, None], -b[:, 1::2].flip(1), b[:, 1::2])
        mirrored = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
        kept.append(index[sel][nms(mirrored, scores[sel], iou)])
    keep = torch.cat(kept).sort().values  # index order, so that equal scores resolve by index
    kept_scores = scores[keep]
    if torch.jit.is_tracing():  # in ONNX a TopK over all N, whose ties are broken by the lower index (the ONNX rule)
        return keep[kept_scores.topk(torch._shape_as_tensor(kept_scores)[0])[1]]
    return keep[torch.sort(kept_scores, descending=True, stable=True).indices]
