"""AP at IoU 0.5 per COCO area band (small < 32^2 <= medium < 96^2 <= large, in the original image's pixels, as
COCO measures), computed by pycocotools' COCOeval with iouThrs = [0.5] and 100 detections per image.

Ignored boxes (VOC difficult, COCO crowd) are passed as COCO crowd regions: detections on them do not count.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, Optional, Sequence

import numpy as np

from detection.analysis.tide import ImageDetections

__all__ = ["ap_per_size"]

BANDS = ("all", "small", "medium", "large")


def ap_per_size(images: Sequence[ImageDetections], num_classes: int, iou_thresh: float = 0.5
                ) -> Dict[str, Optional[float]]:
    """{'all' | 'small' | 'medium' | 'large': AP (0..1) at `iou_thresh`, None when the band has no box}."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_images, anns, results = [], [], []
    for i, im in enumerate(images):
        gt_images.append(dict(id=i + 1))
        for box, label, ignore in zip(np.asarray(im.gt_boxes, np.float64).reshape(-1, 4).tolist(),
                                      np.asarray(im.gt_labels).tolist(), np.asarray(im.gt_ignore).tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=int(label), bbox=[box[0], box[1], w, h],
                             area=w * h, iscrowd=int(bool(ignore))))
        for box, label, score in zip(np.asarray(im.boxes, np.float64).reshape(-1, 4).tolist(),
                                     np.asarray(im.labels).tolist(), np.asarray(im.scores).tolist()):
            results.append(dict(image_id=i + 1, category_id=int(label), score=float(score),
                                bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]]))
    gt = COCO()
    gt.dataset = dict(images=gt_images, annotations=anns,
                      categories=[dict(id=k) for k in range(1, int(num_classes) + 1)])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return {band: (0.0 if any(not a["iscrowd"] for a in anns) else None) for band in BANDS}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([float(iou_thresh)])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, :, -1]  # [recall, class, area]
    out = {}
    for a, band in enumerate(BANDS):
        p = precision[:, :, a]
        valid = p[:, (p > -1).all(0)] if p.size else p
        out[band] = float(valid.mean()) if valid.size else None
    return out
