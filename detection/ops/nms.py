"""Non-maximum suppression with torchvision.ops' signatures (scriptable with TorchScript)."""
import torch
from torch import Tensor

from detection.ops._backend import USE_TORCHVISION
from detection.ops._utils import autocast_to_float


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: drop boxes whose IoU with a higher-scoring kept box is > iou_threshold.

    boxes: [N, 4] xyxy (x1 < x2, y1 < y2); scores: [N], boxes' dtype (float16, bfloat16, float32, float64;
    reduced precision computed in float32; quantized per tensor). Returns int64 indices of the kept boxes, sorted by
    decreasing score (equal scores: lower index first).
    """
    if not torch.jit.is_scripting():
        boxes, scores = autocast_to_float(boxes, scores)
    return torch.ops.detection.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS run independently per category: boxes of different `idxs` never suppress each other.

    boxes: [N, 4] xyxy; scores: [N]; idxs: [N] integer category of each box. Returns int64 indices of the kept
    boxes, sorted by decreasing score (equal scores: lower index first, across categories).

    One compiled call (`torch.ops.detection.batched_nms`) on either device, exactly the union of per-category `nms`
    calls at any scale: the IoU of two boxes of the same category is the one `nms` computes and boxes of different
    categories are never compared - no coordinate offset (torchvision's trick rounds the boxes once the offset is
    large: 16 images x 81 classes of 1333-pixel boxes put them 1.7e6 away, where float32 steps are 0.125 px).
    """
    if not torch.jit.is_scripting():
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling() and boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=boxes.device)  # torchvision's answer, any arguments
        boxes, scores = autocast_to_float(boxes, scores)
    return torch.ops.detection.batched_nms(boxes, scores, idxs, float(iou_threshold))


def _batched_nms_per_category(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """batched_nms with DETECTION_OPS=torchvision: one torchvision nms per category (exact), merged in the same
    order (decreasing score, equal scores by lower index)."""
    import torchvision

    kept = [torch.empty((0,), dtype=torch.int64, device=boxes.device)]
    for category in torch.unique(idxs):
        sel = torch.where(idxs == category)[0]
        kept.append(sel[torchvision.ops.nms(boxes[sel], scores[sel], iou_threshold)])
    keep = torch.cat(kept).sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


if USE_TORCHVISION:  # torchvision.ops' nms (DETECTION_OPS=torchvision); batched_nms stays exact
    from torchvision.ops import nms  # noqa: E402,F401,F811

    batched_nms = _batched_nms_per_category  # noqa: F811
