"""Ground-truth boxes in the frame the model sees: every box of every record, resized as the model resizes.

One row per (box, size): with several TRAIN.SCALES every box appears once per scale, since training draws the
scale per image uniformly. Area bands are COCO's (small < 32^2 <= medium < 96^2 <= large), measured here in the
resized frame (COCO itself measures in the original image; the two agree when the model does not resize).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence

import numpy as np

from detection.data.records import trainable_mask

__all__ = ["AREA_BANDS", "BoxSet", "area_band", "collect_boxes"]

#: COCO's area bands: (name, lower bound inclusive, upper bound exclusive), in squared pixels.
AREA_BANDS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, math.inf))


def area_band(area: np.ndarray) -> np.ndarray:
    """int64 [N]: 0 small, 1 medium, 2 large for box areas [N] (squared pixels)."""
    area = np.asarray(area, np.float64)
    return (area >= AREA_BANDS[1][1]).astype(np.int64) + (area >= AREA_BANDS[2][1]).astype(np.int64)


@dataclasses.dataclass
class BoxSet:
    """Boxes of a dataset in the model's frame, one row per (box, size).

    boxes: float64 [N, 4] xyxy in resized pixels. labels: int64 [N] in 1..K. record: int64 [N] index of the
    record. image_hw: int64 [N, 2] resized (h, w) of the image. padded_hw: int64 [N, 2] after padding to the
    size divisibility. scale_index: int64 [N] which size of the list the row was resized to.
    """

    boxes: np.ndarray
    labels: np.ndarray
    record: np.ndarray
    image_hw: np.ndarray
    padded_hw: np.ndarray
    scale_index: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def wh(self) -> np.ndarray:
        """float64 [N, 2] widths and heights."""
        return self.boxes[:, 2:] - self.boxes[:, :2]

    @property
    def area(self) -> np.ndarray:
        wh = self.wh
        return wh[:, 0] * wh[:, 1]

    def subset(self, index) -> "BoxSet":
        return BoxSet(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def collect_boxes(records: Sequence[dict], view, sizes: str = "train", use_difficult: bool = False) -> BoxSet:
    """The trainable boxes of `records` (crowd never, difficult only with use_difficult) in the frame of `view`
    (a ModelView): sizes 'train' = every TRAIN.SCALES entry (capped at TRAIN.MAX_SIZE), 'test' = TEST.SCALES[0]."""
    if sizes not in ("train", "test"):
        raise ValueError(f"sizes must be 'train' or 'test', got {sizes!r}")
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in ("boxes", "labels", "record", "image_hw", "padded_hw",
                                                           "scale_index")}
    for i, rec in enumerate(records):
        keep = trainable_mask(rec, use_difficult, False)
        boxes = np.asarray(rec["boxes"], np.float64)[keep]
        if boxes.shape[0] == 0:
            continue
        labels = np.asarray(rec["labels"], np.int64)[keep]
        h, w = int(rec["height"]), int(rec["width"])
        frames = (view.train_sizes(h, w) if sizes == "train"
                  else [view.resized(h, w, view.test_min_size, view.test_max_size)])
        for k, (_, (nh, nw), padded) in enumerate(frames):
            n = boxes.shape[0]
            parts["boxes"].append(boxes * np.array([nw / w, nh / h, nw / w, nh / h]))  # the preprocessor's factor
            parts["labels"].append(labels)
            parts["record"].append(np.full(n, i, np.int64))
            parts["image_hw"].append(np.tile(np.array([[nh, nw]], np.int64), (n, 1)))
            parts["padded_hw"].append(np.tile(np.array([padded], np.int64), (n, 1)))
            parts["scale_index"].append(np.full(n, k, np.int64))
    empty = {"boxes": (0, 4), "image_hw": (0, 2), "padded_hw": (0, 2)}
    out = {}
    for key, arrays in parts.items():
        dtype = np.float64 if key == "boxes" else np.int64
        out[key] = np.concatenate(arrays).astype(dtype) if arrays else np.zeros(empty.get(key, (0,)), dtype)
    return BoxSet(**out)
