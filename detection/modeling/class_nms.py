"""The class-wise NMS of the final detections: hard NMS (the default) or Soft-NMS, one compiled call either way.

    keep, scores = class_nms(boxes, scores, groups, iou_threshold)                       # hard: batched_nms
    keep, scores = class_nms(boxes, scores, groups, 0.3, method="gaussian", sigma=0.5)    # Soft-NMS

boxes [N, 4] xyxy, scores [N], groups [N] integers (class, or image * C + class): boxes of different groups never
suppress or decay each other. Returns the kept indices by decreasing (decayed) score and `scores` with the kept
entries replaced by their decayed scores (the same tensor under "hard": the values are untouched, bit for bit),
so callers index it with `keep` as before. The RoI heads' detections (TEST.NMS_METHOD) and the test-time
augmentation merge both call it.
"""
from typing import Tuple

from torch import Tensor

from detection.ops import batched_nms, batched_soft_nms

__all__ = ["NMS_METHODS", "class_nms", "check_nms_method"]

#: TEST.NMS_METHOD's values: hard NMS, Soft-NMS with linear or gaussian decay (Bodla et al. 2017)
NMS_METHODS = ("hard", "linear", "gaussian")


def check_nms_method(method: str) -> str:
    """`method` if it is one of NMS_METHODS, else ValueError naming TEST.NMS_METHOD."""
    if method not in NMS_METHODS:
        raise ValueError(f"TEST.NMS_METHOD must be one of {list(NMS_METHODS)}, got {method!r}")
    return method


def class_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, method: str = "hard",
              sigma: float = 0.5, min_score: float = 0.001) -> Tuple[Tensor, Tensor]:
    """Per-group NMS. "hard": `batched_nms` (IoU > iou_threshold suppresses). "linear": Soft-NMS, a later box's
    score times (1 - IoU) where IoU > iou_threshold; "gaussian": times exp(-IoU^2 / sigma); boxes whose decayed
    score falls below min_score are dropped (detection.ops.batched_soft_nms, the authors' reference).

    Returns (keep int64 [M] by decreasing score, scores [N] with scores[keep] the decayed scores)."""
    if method == "hard":
        return batched_nms(boxes, scores, groups, iou_threshold), scores
    keep, decayed = batched_soft_nms(boxes, scores, groups, method, iou_threshold, sigma, min_score)
    return keep, scores.scatter(0, keep, decayed.to(scores.dtype))
