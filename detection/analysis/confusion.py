"""A detection confusion matrix: ground-truth classes (+ background) x predicted classes (+ background).

Per image, the detections scoring at least `score_thresh` are matched one to one with the ground-truth boxes,
class-agnostically, greedily by decreasing IoU among the pairs with IoU >= `iou_thresh` (Ultralytics' and
mmdetection's rule). Row k, column j counts boxes of class k detected as class j; the last column counts missed
boxes (no detection), the last row detections on no box (background). Detections on an ignored box (VOC difficult,
COCO crowd) and ignored boxes themselves are left out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from detection.analysis.tide import ImageDetections, pairwise_iou

__all__ = ["confusion_matrix", "confusion_csv"]


def confusion_matrix(images: Sequence[ImageDetections], num_classes: int, score_thresh: float = 0.5,
                     iou_thresh: float = 0.5) -> np.ndarray:
    """int64 [K + 1, K + 1]: rows ground truth (labels 1..K, then background), columns predictions (1..K, then
    background = missed)."""
    k = int(num_classes)
    matrix = np.zeros((k + 1, k + 1), np.int64)
    for im in images:
        keep = np.asarray(im.scores, np.float64).reshape(-1) >= score_thresh
        det_boxes = np.asarray(im.boxes, np.float64).reshape(-1, 4)[keep]
        det_labels = np.asarray(im.labels, np.int64).reshape(-1)[keep] - 1
        ignore = np.asarray(im.gt_ignore, bool).reshape(-1)
        gt_boxes = np.asarray(im.gt_boxes, np.float64).reshape(-1, 4)
        gt_labels = np.asarray(im.gt_labels, np.int64).reshape(-1) - 1
        iou = pairwise_iou(det_boxes, gt_boxes[~ignore])
        d, g = np.nonzero(iou >= iou_thresh)
        order = np.argsort(-iou[d, g], kind="stable")
        d, g = d[order], g[order]
        _, first = np.unique(d, return_index=True)  # each detection's best pair ...
        d, g = d[np.sort(first)], g[np.sort(first)]
        _, first = np.unique(g, return_index=True)  # ... and each box's best remaining one
        d, g = d[np.sort(first)], g[np.sort(first)]
        real_labels = gt_labels[~ignore]
        np.add.at(matrix, (real_labels[g], det_labels[d]), 1)
        missed = np.setdiff1d(np.arange(len(real_labels)), g)
        np.add.at(matrix, (real_labels[missed], k), 1)
        spare = np.setdiff1d(np.arange(len(det_labels)), d)
        if ignore.any() and spare.size:
            on_ignored = (pairwise_iou(det_boxes[spare], gt_boxes[ignore]) >= iou_thresh).any(1)
            spare = spare[~on_ignored]
        np.add.at(matrix, (k, det_labels[spare]), 1)
    return matrix


def confusion_csv(matrix: np.ndarray, class_names: Sequence[str], score_thresh: float, iou_thresh: float) -> str:
    """The matrix as CSV: a header row of predicted names, one row per ground-truth name; 'background' last."""
    names = [str(n) for n in class_names] + ["background"]
    lines = [f"# rows: ground truth, columns: prediction; detections with score >= {score_thresh:g}, matched at "
             f"IoU >= {iou_thresh:g}",
             ",".join(["ground truth \\ predicted"] + [_csv(n) for n in names])]
    for name, row in zip(names, matrix):
        lines.append(",".join([_csv(name)] + [str(int(v)) for v in row]))
    return "\n".join(lines) + "\n"


def _csv(text: str) -> str:
    return f'"{text}"' if any(c in text for c in ',"\n') else text
