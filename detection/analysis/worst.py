"""The detection counterpart of the classifier's confidently-wrong sheet: the most confident false positives
(with TIDE's kind: cls, loc, both, dupe, bkg) and the largest missed boxes, each drawn on a crop of its image
(the error box red, the ground-truth box it relates to green)."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from detection.utils.visualize import draw_detections, make_contact_sheet

__all__ = ["worst_errors", "error_sheet"]

_KIND = {"cls": "wrong class", "loc": "poor box", "both": "class + box", "dupe": "duplicate", "bkg": "background",
         "missed": "missed"}
_RED, _GREEN = (220, 40, 40), (30, 170, 60)


def worst_errors(errors: Sequence[dict], num: int = 12) -> tuple:
    """(the `num` highest-scored false positives, the `num` largest missed boxes) from TideResult.errors."""
    fps = sorted((e for e in errors if e["type"] != "missed"), key=lambda e: -e["score"])[:num]
    missed = [e for e in errors if e["type"] == "missed"]
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (e["gt_box"] for e in missed)]
    missed = [missed[i] for i in np.argsort(-np.asarray(area), kind="stable")[:num]]
    return fps, missed


def _crop(image: np.ndarray, boxes: List[list], context: float = 1.0, min_side: int = 96):
    """The image around the union of `boxes`, widened by `context` x its size on each side (at least min_side)."""
    h, w = image.shape[:2]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    pad_x = max((x2 - x1) * context, (min_side - (x2 - x1)) / 2, 0)
    pad_y = max((y2 - y1) * context, (min_side - (y2 - y1)) / 2, 0)
    cx1, cy1 = int(max(0, np.floor(x1 - pad_x))), int(max(0, np.floor(y1 - pad_y)))
    cx2, cy2 = int(min(w, np.ceil(x2 + pad_x))), int(min(h, np.ceil(y2 + pad_y)))
    return image[cy1:cy2, cx1:cx2], np.array([cx1, cy1, cx1, cy1], np.float64)


def error_sheet(entries: Sequence[dict], read_image, class_names: Sequence[str], title: str,
                cell_size=(224, 168), ncols: int = 6):
    """A contact sheet of error `entries` (TideResult.errors dicts with an added 'file'); read_image(path) -> RGB.
    Returns uint8 RGB, or None when there is nothing to show."""
    if not entries:
        return None
    pictures, captions = [], []

    def name(label):
        return class_names[label - 1] if 0 < label <= len(class_names) else f"class {label}"

    for e in entries:
        image = read_image(e["file"])
        boxes, tags = [], []
        if "box" in e:
            boxes.append(e["box"])
            tags.append(f"{name(e['label'])} {e['score']:.2f}")
        if "gt_box" in e:
            boxes.append(e["gt_box"])
            tags.append(f"gt {name(e['gt_label'])}")
        crop, offset = _crop(image, boxes)
        shifted = np.asarray(boxes, np.float64) - offset
        labels = np.arange(len(boxes))
        colours = [_RED, _GREEN] if "box" in e else [_GREEN]
        pictures.append(draw_detections(crop, shifted, labels, None, tags, colors=colours, label_offset=0,
                                        min_side=160))
        kind = _KIND[e["type"]]
        captions.append(f"{kind}: {name(e['label'])} {e['score']:.2f}" if "box" in e
                        else f"{kind}: {name(e['gt_label'])} ({int(np.sqrt(_area(e['gt_box'])))} px)")
    return make_contact_sheet(pictures, captions, ncols=ncols, cell_size=cell_size, title=title)


def _area(b) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])
