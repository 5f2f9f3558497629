"""Test-time augmentation as a wrapper module (detectron2's GeneralizedRCNNWithTTA idea), for both families.

    tta = build_tta(cfg, model)          # detector: DetectorWithTTA when TEST.SCALES has several sizes or
                                         # TEST.FLIP; classifier: ClassifierWithTenCrop under TEST.TEN_CROP; else model
    outputs = tta(images)                # list of [3, H, W] float RGB 0..1 -> the model contract's dicts

Every view (each shortest-side scale in `scales`, each with and without a horizontal flip) runs the detector with
its final NMS off, so it returns every score-thresholded candidate; the candidates are mapped back to the
original image (boxes xyxy, original pixels), pooled, and one per-class NMS + top-k picks the detections: the
py-faster-rcnn / detectron2 rule of merging before NMS rather than voting over already-suppressed outputs. The
merge's NMS is the model's own (TEST.NMS_METHOD: hard or Soft-NMS, detection/modeling/class_nms.py).
The wrapped detector is never modified.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from detection.modeling.class_nms import check_nms_method, class_nms

__all__ = ["DetectorWithTTA", "ClassifierWithTenCrop", "build_tta", "flip_boxes", "merge_detections"]


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """xyxy [M, 4] boxes mirrored in an image of `width` pixels (continuous coordinates)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def merge_detections(views: Sequence[Dict[str, torch.Tensor]], nms_thresh: float, max_dets: int,
                     nms_method: str = "hard", soft_nms_sigma: float = 0.5, soft_nms_min_score: float = 0.001
                     ) -> Dict[str, torch.Tensor]:
    """Pool one image's candidates from several views (same image coordinates) and keep the per-class NMS
    survivors (hard, or Soft-NMS with decayed scores: `class_nms`), at most `max_dets`, by decreasing score.
    views: dicts of boxes [M_i, 4], scores [M_i], labels [M_i]."""
    boxes = torch.cat([v["boxes"] for v in views])
    scores = torch.cat([v["scores"] for v in views])
    labels = torch.cat([v["labels"] for v in views])
    keep, scores = class_nms(boxes, scores, labels, nms_thresh, nms_method, soft_nms_sigma, soft_nms_min_score)
    keep = keep[:max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class DetectorWithTTA(nn.Module):
    """Eval-only wrapper: a detector run on several views of each image, candidates merged before one NMS.

    Args:
        model: a detector whose eval forward takes ``test_min_size=`` and ``final_nms=`` (FasterRCNN).
        scales: shortest-side sizes of the views. flip: also run every scale on the mirrored image.
        nms_thresh, detections_per_image: the merge's per-class NMS IoU and top-k (TEST.NMS,
            TEST.DETECTIONS_PER_IMAGE). nms_method, soft_nms_sigma, soft_nms_min_score: hard NMS or Soft-NMS
            (TEST.NMS_METHOD, TEST.SOFT_NMS_SIGMA, TEST.SOFT_NMS_MIN_SCORE).
    """

    def __init__(self, model: nn.Module, scales: Sequence[int], flip: bool, nms_thresh: float,
                 detections_per_image: int, nms_method: str = "hard", soft_nms_sigma: float = 0.5,
                 soft_nms_min_score: float = 0.001):
        super().__init__()
        if not scales:
            raise ValueError("test-time augmentation needs at least one scale")
        self.model = model
        self.scales = tuple(int(s) for s in scales)
        self.flip = bool(flip)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_image = int(detections_per_image)
        self.nms_method = check_nms_method(nms_method)
        self.soft_nms_sigma = float(soft_nms_sigma)
        self.soft_nms_min_score = float(soft_nms_min_score)

    @torch.no_grad()
    def forward(self, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        per_image: List[List[Dict[str, torch.Tensor]]] = [[] for _ in images]
        for scale in self.scales:
            for flipped in ((False, True) if self.flip else (False,)):
                view = [img.flip(-1) for img in images] if flipped else images
                for i, out in enumerate(self.model(view, test_min_size=scale, final_nms=False)):
                    if flipped:
                        out = {**out, "boxes": flip_boxes(out["boxes"], images[i].shape[-1])}
                    per_image[i].append(out)
        return [merge_detections(views, self.nms_thresh, self.detections_per_image, self.nms_method,
                                 self.soft_nms_sigma, self.soft_nms_min_score) for views in per_image]

    def extra_repr(self) -> str:
        return f"scales={self.scales}, flip={self.flip}, nms_thresh={self.nms_thresh}, nms_method={self.nms_method}"


class ClassifierWithTenCrop(nn.Module):
    """Eval-only wrapper: a classifier's probabilities averaged over ten crops of each image (the four corners and
    the centre of the image resized to S / 0.875, and their mirror images; detection/ops/resize.py ten_crop)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        from detection.ops.resize import ten_crop

        m = self.model
        crops = torch.cat([ten_crop(img, m.image_size, m.resize_mode) for img in images])  # [10B, 3, S, S]
        outs = m(list(crops.unbind(0)))
        probs = torch.stack([o["probs"] for o in outs]).view(len(images), 10, -1).mean(dim=1)
        return m.outputs_from_probs(probs)


def build_tta(cfg, model: nn.Module) -> nn.Module:
    """The model for inference, built once by its caller. A classifier: ClassifierWithTenCrop under TEST.TEN_CROP,
    else itself. A detector under TEST.SCALES / TEST.FLIP: itself run at TEST.SCALES[0] for one unflipped view (its
    own test resize), else a DetectorWithTTA around it."""
    if cfg.MODEL.META_ARCHITECTURE == "classifier":
        return ClassifierWithTenCrop(model) if cfg.TEST.TEN_CROP else model
    scales = [int(s) for s in cfg.TEST.SCALES]
    if len(scales) == 1 and not cfg.TEST.FLIP:
        if scales[0] == getattr(getattr(model, "preprocess", None), "test_min_size", None):
            return model
        return _SingleScale(model, scales[0])
    t = cfg.TEST
    return DetectorWithTTA(model, scales, bool(t.FLIP), float(t.NMS), int(t.DETECTIONS_PER_IMAGE), t.NMS_METHOD,
                           float(t.SOFT_NMS_SIGMA), float(t.SOFT_NMS_MIN_SCORE))


class _SingleScale(nn.Module):
    """One view at another shortest side than the model was built with (``--set TEST.SCALES [s]`` on a model
    built from another config)."""

    def __init__(self, model: nn.Module, scale: int):
        super().__init__()
        self.model, self.scale = model, int(scale)

    def forward(self, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        return self.model(images, test_min_size=self.scale)
