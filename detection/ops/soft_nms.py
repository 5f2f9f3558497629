"""Soft-NMS (Bodla, Singh, Chellappa and Davis, "Soft-NMS - Improving Object Detection With One Line of Code",
ICCV 2017): instead of dropping the boxes that overlap a selected one, decay their scores.

The compiled kernels (csrc/cpu/soft_nms_kernel.cpp, csrc/cuda/soft_nms_kernel.cu: one CUDA block per category)
reproduce the authors' reference (github.com/bharatsingh430/soft-nms, lib/nms/cpu_nms.pyx, `cpu_soft_nms`) step for
step on continuous xyxy boxes (the reference's inclusive pixels add 1 to every width and height: the reference on
boxes B is this op on B + (0, 0, 1, 1)). ONNX has no such operator: exporting it raises an error naming
TEST.NMS_METHOD (detection/export/symbolics.py); torch.export records the op itself.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import autocast_to_float
from detection.ops.nms import batched_nms, nms

__all__ = ["soft_nms", "batched_soft_nms", "SOFT_NMS_METHODS"]

#: method names and the kernel's codes (the reference's: 1 linear, 2 gaussian); "hard" is plain NMS
SOFT_NMS_METHODS = ("hard", "linear", "gaussian")


def soft_nms(boxes: Tensor, scores: Tensor, method: str = "linear", iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 0.001) -> Tuple[Tensor, Tensor]:
    """Soft-NMS over all boxes as one category.

    boxes: [N, 4] xyxy (continuous coordinates); scores: [N], boxes' dtype. At each step the box of highest current
    score is selected and the score s of every later box that intersects it is decayed:
      "linear":   s * (1 - IoU) where IoU > iou_threshold (else unchanged)
      "gaussian": s * exp(-IoU^2 / sigma)   (iou_threshold unused)
      "hard":     exactly `nms(boxes, scores, iou_threshold)` with the original scores (sigma, min_score unused)
    A box whose decayed score falls below min_score is dropped. Defaults are the reference's (Nt 0.3, sigma 0.5,
    threshold 0.001).

    Returns (keep int64 [M], kept_scores [M]): the selected boxes by decreasing decayed score, in the order the
    reference selects them (equal scores: the first of them in its working array, i.e. input order as permuted by
    its swaps), and their decayed scores in the scores' dtype.
    """
    return _soft_nms(boxes, scores, None, method, iou_threshold, sigma, min_score)


def batched_soft_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, method: str = "linear", iou_threshold: float = 0.3,
                     sigma: float = 0.5, min_score: float = 0.001) -> Tuple[Tensor, Tensor]:
    """Soft-NMS run independently per category (idxs: [N] integers): boxes of different categories never decay each
    other; each category is processed as `soft_nms` on its boxes in input order. One compiled call on either device.

    Returns (keep, kept_scores) by decreasing decayed score; equal scores: smaller idx first, then the reference's
    order within a category. "hard" is exactly `batched_nms`.
    """
    return _soft_nms(boxes, scores, idxs, method, iou_threshold, sigma, min_score)


def _method_code(method: str) -> int:
    if method == "linear":
        return 1
    if method == "gaussian":
        return 2
    raise ValueError(f"soft_nms: method must be one of 'hard', 'linear', 'gaussian', got '{method}'")


def _soft_nms(boxes: Tensor, scores: Tensor, idxs: Optional[Tensor], method: str, iou_threshold: float,
              sigma: float, min_score: float) -> Tuple[Tensor, Tensor]:
    if method == "hard":
        keep = nms(boxes, scores, iou_threshold) if idxs is None else batched_nms(boxes, scores, idxs, iou_threshold)
        return keep, scores[keep]
    code = _method_code(method)
    if not torch.jit.is_scripting():
        if USE_TORCHVISION:
            raise RuntimeError("soft_nms needs the compiled ops (detection._C); DETECTION_OPS=torchvision is set and "
                               "torchvision.ops has no Soft-NMS")
        boxes, scores = autocast_to_float(boxes, scores)
    return torch.ops.detection.soft_nms(boxes, scores, idxs, code, float(iou_threshold), float(sigma),
                                        float(min_score))
