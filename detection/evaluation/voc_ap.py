"""The core of VOC evaluation: inclusive-pixel IoU, per-class matching and AP (VOCevaldet.m, voc_eval.py).

Conventions
-----------
The toolkit's boxes are xyxy float in continuous pixels (width = x2 - x1). The devkit works in VOC's 1-based
inclusive pixels (width = xmax - xmin + 1); the evaluation converts at its borders only::

    xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2        (and back: x1 = xmin - 1, ..., x2 = xmax)

and computes IoU in the devkit's way on the inclusive boxes (``iw = min(xmax) - max(xmin) + 1``, union of
``(xmax - xmin + 1) * (ymax - ymin + 1)`` areas). Labels are 1..K in the order of ``class_names``.

Rules (per class, over all images)
----------------------------------
Two rule sets, each its reference exactly (``rules``):

=================  ==========================================  ============================================
                   ``py-faster-rcnn`` (default: voc_eval.py,     ``devkit`` (the MATLAB VOCevaldet.m / VOCap.m)
                   as copied by detectron2)
=================  ==========================================  ============================================
score order        ``np.argsort(-confidence)`` (numpy's default  stable (MATLAB's ``sort``): ties keep their
                   sort: ties in no guaranteed order)            input order
match              ``ovmax > iou_thresh``                        ``ovmax >= iou_thresh``
precision          ``tp / max(tp + fp, eps)``                    ``tp ./ (fp + tp)`` (NaN while only ignored
                                                                 detections were seen; ``max`` skips NaN)
11-point           ``t in np.arange(0., 1.1, 0.1)`` (0.3, 0.6,   ``t = 0:0.1:1`` (k * 0.1 up to 0.5, then
thresholds         0.7 carry float error)                        1 - (10 - k) * 0.1: only 0.3 carries error)
=================  ==========================================  ============================================

Common to both:

* The input order of detections (the tie order) is results-file line order, or (image index, detection index)
  for ``voc_evaluate`` (the order ``write_voc_results`` writes).
* Each detection is compared with the ground-truth objects of its class in its image, difficult ones included;
  the first one with the highest IoU is its match (``jmax``). A matched difficult object makes the detection
  neither TP nor FP (ignored); otherwise the first detection of that object is a TP and later ones are FPs
  (duplicates); an unmatched detection is a FP. The match does not depend on whether the best object was
  already taken, so the greedy pass is a vectorised "first occurrence" per object here.
* ``npos`` counts the non-difficult objects; recall = cumTP / npos.
* AP: VOC2010+ area under the monotone precision envelope (default), or VOC2007's 11-point average
  (``use_07_metric``) of the max precision at recall >= t, accumulated as ``ap = ap + p / 11``.
* A class with no non-difficult object (npos == 0) has AP = NaN (reported, not 0) and is left out of the mAP;
  with no such class at all the mAP is NaN.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from detection.evaluation.evaluator import to_numpy

__all__ = [
    "PIXEL_OFFSET", "VOC_RULES", "ELEVEN_POINT_THRESHOLDS", "check_rules", "bbox_overlaps", "voc_ap", "voc_evaluate",
    "evaluate_table", "to_inclusive",
    "as_detections", "as_ground_truth", "check_labels", "concat_table",
]

PIXEL_OFFSET = 1.0  # the devkit's inclusive-pixel convention: width = xmax - xmin + 1

VOC_RULES = ("py-faster-rcnn", "devkit")  # the first is the default
ELEVEN_POINT_THRESHOLDS = {
    "py-faster-rcnn": np.arange(0.0, 1.1, 0.1),  # voc_eval.py: `for t in np.arange(0., 1.1, 0.1)`
    # MATLAB's colon 0:0.1:1 computes the first half from the start and the second half from the end
    "devkit": np.array([k * 0.1 for k in range(6)] + [1.0 - (10 - k) * 0.1 for k in range(6, 11)]),
}


def check_rules(rules: str) -> str:
    """`rules` if it names a rule set, else ValueError listing them."""
    if rules not in VOC_RULES:
        raise ValueError(f"unknown VOC rules {rules!r}: expected one of {list(VOC_RULES)}")
    return rules


def _as_box_array(boxes, what: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim not in (1, 2) or b.shape[-1] != 4:
        raise ValueError(f"bbox_overlaps: {what} must be [N, 4] (x1, y1, x2, y2), got shape {b.shape}")
    return b.reshape(-1, 4)


def bbox_overlaps(boxes: np.ndarray, query_boxes: np.ndarray, pixel_offset: float = PIXEL_OFFSET) -> np.ndarray:
    """IoU of boxes [N, 4] and query_boxes [K, 4] (x1 y1 x2 y2) -> [N, K] float64, 0 where they do not intersect.

    pixel_offset: 1.0 for VOC's inclusive integer pixels (width = x2 - x1 + 1, the devkit's rule and
    py-faster-rcnn's ``bbox_overlaps``), 0.0 for continuous coordinates (width = x2 - x1, as
    `detection.ops.box_iou`, the torch IoU of the training and inference path). Computed in float64.
    """
    b = _as_box_array(boxes, "boxes")
    q = _as_box_array(query_boxes, "query_boxes")
    q_area = (q[:, 2] - q[:, 0] + pixel_offset) * (q[:, 3] - q[:, 1] + pixel_offset)
    b_area = (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)
    iw = np.minimum(b[:, None, 2], q[None, :, 2]) - np.maximum(b[:, None, 0], q[None, :, 0]) + pixel_offset
    ih = np.minimum(b[:, None, 3], q[None, :, 3]) - np.maximum(b[:, None, 1], q[None, :, 1]) + pixel_offset
    valid = (iw > 0) & (ih > 0)
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = inter / (b_area[:, None] + q_area[None, :] - inter)
    return np.where(valid, ov, 0.0)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False, rules: str = "py-faster-rcnn") -> float:
    """AP from recall [D] and precision [D] (cumulative over score-sorted detections; recall nondecreasing).

    use_07_metric: VOC2007's 11-point AP at the thresholds of `rules` (ELEVEN_POINT_THRESHOLDS); otherwise the
    VOC2010+ area under the precision envelope. NaN precisions (the devkit's 0/0) are skipped by the maxima,
    as MATLAB's ``max`` does.
    """
    rec = np.asarray(rec, dtype=np.float64).ravel()
    prec = np.asarray(prec, dtype=np.float64).ravel()
    if use_07_metric:
        # max precision at recall >= t == suffix max of precision from the first index with rec >= t
        suffix_max = np.fmax.accumulate(prec[::-1])[::-1] if prec.size else prec
        first = np.searchsorted(rec, ELEVEN_POINT_THRESHOLDS[check_rules(rules)], side="left")
        ap = 0.0
        for k in first:  # accumulate in the references' order: ap = ap + p / 11
            p = suffix_max[k] if k < rec.size else 0.0
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def evaluate_table(gt_boxes, gt_labels, gt_difficult, det_image, det_labels, det_scores, det_boxes,
                   class_names, iou_thresh, use_07_metric, rules="py-faster-rcnn") -> dict:
    """Core of the evaluation, on inclusive-pixel float64 boxes.

    gt_*: per image lists: boxes [G_i, 4] float64 inclusive pixels, labels [G_i] int64 in 1..K, difficult [G_i] bool.
    det_*: one flat table over all images: image index [D] int64, labels [D] 1..K, scores [D], boxes [D, 4] float64
    inclusive pixels. Within a class, the table order is the input order of the score sort (the tie order).
    Returns `voc_evaluate`'s dict.
    """
    devkit = check_rules(rules) == "devkit"
    gt_counts = np.array([len(b) for b in gt_labels], dtype=np.int64)
    gt_offsets = np.concatenate(([0], np.cumsum(gt_counts)))
    all_gt_labels = np.concatenate(list(gt_labels) + [np.zeros(0, np.int64)]).astype(np.int64)
    all_gt_difficult = np.concatenate(list(gt_difficult) + [np.zeros(0, bool)]).astype(bool)

    D = det_image.size
    ovmax = np.full(D, -np.inf)
    jmax = np.full(D, -1, dtype=np.int64)  # index into the concatenated ground truth
    if D:
        order = np.argsort(det_image, kind="stable")
        images, starts = np.unique(det_image[order], return_index=True)
        ends = np.append(starts[1:], D)
        for i, s, e in zip(images.tolist(), starts.tolist(), ends.tolist()):
            if gt_counts[i] == 0:
                continue
            idx = order[s:e]
            ious = bbox_overlaps(det_boxes[idx], gt_boxes[i])  # [m, G_i]
            # objects of the same class; one that does not intersect never wins (the devkit skips it,
            # voc_eval.py gets IoU 0 for it, which cannot pass the threshold either)
            ious = np.where((det_labels[idx][:, None] == gt_labels[i][None, :]) & (ious > 0), ious, -np.inf)
            j = ious.argmax(axis=1)  # the first maximum, as `if ov > ovmax` in the devkit
            ov = ious[np.arange(idx.size), j]
            ovmax[idx] = ov
            jmax[idx] = np.where(np.isfinite(ov), gt_offsets[i] + j, -1)

    precision, recall, ap, num_gt = {}, {}, {}, {}
    for c, name in enumerate(class_names, start=1):
        npos = int(np.count_nonzero((all_gt_labels == c) & ~all_gt_difficult))
        sel = np.flatnonzero(det_labels == c)
        # voc_eval.py: `sorted_ind = np.argsort(-confidence)`; VOCevaldet.m: `[sc, si] = sort(-confidence)`
        sel = sel[np.argsort(-det_scores[sel], kind="stable" if devkit else None)]
        ov, gi = ovmax[sel], jmax[sel]
        matched = (ov >= iou_thresh) if devkit else (ov > iou_thresh)
        matched &= gi >= 0
        ignored = np.zeros(sel.size, dtype=bool)
        ignored[matched] = all_gt_difficult[gi[matched]]
        candidates = np.flatnonzero(matched & ~ignored)
        tp = np.zeros(sel.size)
        _, first = np.unique(gi[candidates], return_index=True)  # first (highest-scored) detection per object
        tp[candidates[first]] = 1.0
        fp = ((~matched) | (matched & ~ignored & (tp == 0))).astype(np.float64)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / float(npos) if npos > 0 else np.full(sel.size, np.nan)
        if devkit:
            with np.errstate(invalid="ignore"):
                prec = tp / (fp + tp)
        else:
            prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        precision[name], recall[name], num_gt[name] = prec, rec, npos
        ap[name] = voc_ap(rec, prec, use_07_metric, rules) if npos > 0 else float("nan")
    valid = [ap[n] for n in class_names if num_gt[n] > 0]
    m_ap = float(np.mean(valid)) if valid else float("nan")
    return dict(mAP=m_ap, AP=ap, precision=precision, recall=recall, num_gt=num_gt)


def to_inclusive(boxes_continuous: np.ndarray) -> np.ndarray:
    """[N, 4] continuous xyxy -> float64 VOC inclusive pixels (x1 + 1, y1 + 1, x2, y2)."""
    b = np.asarray(boxes_continuous, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] += PIXEL_OFFSET
    return b


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    """ValueError naming `what` unless every label is in 1..num_classes."""
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"{what}: labels must be in 1..{num_classes} (0 is background), "
                         f"got {np.unique(labels).tolist()}")


def as_detections(det: Mapping, where: str):
    """dict(boxes [M, 4], scores [M], labels [M]) (numpy or torch) -> float64 boxes, float64 scores, int64 labels."""
    boxes = to_numpy(det["boxes"], np.float64).reshape(-1, 4)
    scores = to_numpy(det["scores"], np.float64).reshape(-1)
    labels = to_numpy(det["labels"]).reshape(-1).astype(np.int64)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"{where}: boxes, scores and labels differ in length "
                         f"({len(boxes)}, {len(scores)}, {len(labels)})")
    return boxes, scores, labels


def as_ground_truth(gt: Mapping, where: str):
    """dict(boxes [G, 4], labels [G], difficult [G] optional) -> float64 boxes, int64 labels, bool difficult."""
    boxes = to_numpy(gt["boxes"], np.float64).reshape(-1, 4)
    labels = to_numpy(gt["labels"]).reshape(-1).astype(np.int64)
    difficult = gt.get("difficult")
    difficult = np.zeros(len(labels), bool) if difficult is None else to_numpy(difficult).reshape(-1).astype(bool)
    if not (len(boxes) == len(labels) == len(difficult)):
        raise ValueError(f"{where}: boxes, labels and difficult differ in length "
                         f"({len(boxes)}, {len(labels)}, {len(difficult)})")
    return boxes, labels, difficult


def concat_table(parts):
    """[(image index [n], labels [n], scores [n], boxes [n, 4]), ...] -> the four concatenated arrays."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4))
    image, labels, scores, boxes = zip(*parts)
    return (np.concatenate(image).astype(np.int64), np.concatenate(labels).astype(np.int64),
            np.concatenate(scores).astype(np.float64), np.concatenate(boxes).astype(np.float64).reshape(-1, 4))


def voc_evaluate(detections: Sequence[Mapping], ground_truth: Sequence[Mapping], class_names: Sequence[str],
                 iou_thresh: float = 0.5, use_07_metric: bool = False, rules: str = "py-faster-rcnn") -> dict:
    """VOC AP per class and mAP with the rules of py-faster-rcnn or of the devkit (see the module docstring).

    detections[i]: dict(boxes [M, 4] xyxy continuous pixels, scores [M], labels [M] in 1..K) for image i
        (numpy or torch).
    ground_truth[i]: dict(boxes [G, 4] xyxy continuous pixels, labels [G] in 1..K, difficult [G] bool, optional)
        for the same image i; a record of the data reader fits.
    class_names: the K class names; label k is class_names[k - 1].
    rules: "py-faster-rcnn" (voc_eval.py) or "devkit" (VOCevaldet.m).

    Returns dict(mAP=float, AP={class: float}, precision={class: [D_c]}, recall={class: [D_c]},
    num_gt={class: npos}): fractions in 0..1; precision/recall are cumulative over the class's score-sorted
    detections (ignored ones included, as in the devkit); AP is NaN for a class with npos == 0 (excluded from mAP).
    """
    check_rules(rules)
    if len(detections) != len(ground_truth):
        raise ValueError(f"voc_evaluate: {len(detections)} detection entries for {len(ground_truth)} images")
    K = len(class_names)
    gt_boxes, gt_labels, gt_difficult = [], [], []
    for i, gt in enumerate(ground_truth):
        b, l, d = as_ground_truth(gt, f"ground_truth[{i}]")
        check_labels(l, K, f"ground_truth[{i}]")
        gt_boxes.append(to_inclusive(b))
        gt_labels.append(l)
        gt_difficult.append(d)
    parts = []
    for i, det in enumerate(detections):
        b, s, l = as_detections(det, f"detections[{i}]")
        check_labels(l, K, f"detections[{i}]")
        parts.append((np.full(len(l), i, dtype=np.int64), l, s, to_inclusive(b)))
    det_image, det_labels, det_scores, det_boxes = concat_table(parts)
    return evaluate_table(gt_boxes, gt_labels, gt_difficult, det_image, det_labels, det_scores, det_boxes,
                          list(class_names), iou_thresh, use_07_metric, rules)
