"""A torch Dataset over detection records: reads RGB, picks the trainable boxes, applies the transform."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from detection.data.image_io import read_record_image
from detection.data.records import trainable_mask
from detection.data.samplers import apply_sample_key

__all__ = ["DetectionDataset", "aspect_ratio_group_ids"]


def aspect_ratio_group_ids(records: Sequence[dict]) -> np.ndarray:
    """int64 [N]: 0 for landscape/square images (w >= h), 1 for portrait (w < h)."""
    hw = np.asarray([(r["height"], r["width"]) for r in records], dtype=np.int64).reshape(-1, 2)
    return (hw[:, 1] < hw[:, 0]).astype(np.int64)


class DetectionDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (image, target)`` for record ``i``; ``dataset[(i, seed)]`` reseeds the transform first.

    image: float32 Tensor[3, H, W] RGB in 0..1 (after the transform). target: dict with
      ``boxes`` float32 Tensor[M, 4] xyxy continuous pixels of the returned image, ``labels`` int64 Tensor[M] in
      1..K, ``image_id`` (the record's), ``index`` (i), ``orig_size`` (h, w) of the file, ``size`` (H, W) returned
      (they differ after a crop; the model does the resizing).
    Images without boxes give ``boxes`` of shape [0, 4].

    records: reader records. transform: a ``DetectionTransform``-like callable
      ``(image, boxes) -> (image, boxes, keep)``; None = identity.
    use_difficult / use_crowd: keep boxes flagged difficult / iscrowd in the targets (default: leave them out).
    skip_bad_images: an unreadable image is replaced by the next readable record with a warning (training);
      otherwise ImageReadError (naming the file) is raised.
    class_names, meta: carried along for the engine and evaluators (label k is ``class_names[k - 1]``).
    """

    def __init__(self, records: Sequence[dict], transform: Optional[Callable] = None, use_difficult: bool = False,
                 use_crowd: bool = False, skip_bad_images: bool = False, class_names: Sequence[str] = (),
                 meta: Optional[dict] = None):
        self.records = list(records)
        self.transform = transform
        self.use_difficult = bool(use_difficult)
        self.use_crowd = bool(use_crowd)
        self.skip_bad_images = bool(skip_bad_images)
        self.class_names = tuple(class_names)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.records)

    def group_ids(self) -> np.ndarray:
        """Aspect-ratio group of every record (see :func:`aspect_ratio_group_ids`)."""
        return aspect_ratio_group_ids(self.records)

    def set_seed(self, seed: int) -> None:
        """Reseed the transform's randomness (called by the loader's worker_init_fn)."""
        if hasattr(self.transform, "set_seed"):
            self.transform.set_seed(seed)

    def _read(self, index: int):
        i, image = read_record_image(self.records, index, self.skip_bad_images, check_size=True)
        return i, self.records[i], image

    def __getitem__(self, index):
        index, rec, image = self._read(apply_sample_key(self, index))
        keep = trainable_mask(rec, self.use_difficult, self.use_crowd)
        boxes, labels = rec["boxes"][keep], rec["labels"][keep]
        if self.transform is not None:
            image, boxes, kept = self.transform(image, boxes)
            labels = labels[kept]
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        target = dict(
            boxes=torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            labels=torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1)),
            image_id=rec["image_id"],
            index=index,
            orig_size=(int(rec["height"]), int(rec["width"])),
            size=(int(img.shape[1]), int(img.shape[2])),
        )
        return img, target
