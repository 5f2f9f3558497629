"""Detection augmentation with albumentations: the image, its boxes and their ids move together.

Boxes use albumentations' ``'pascal_voc'`` format: ``[x_min, y_min, x_max, y_max]`` in absolute pixels,
*continuous* (albumentations normalises by width/height and flips as ``x -> W - x``, clips to ``[0, W]``), which is
exactly this toolkit's contract: a box touching the right border has ``x2 == W`` and is valid. Each box carries
its index (label field ``box_ids``), so labels, difficult and crowd flags follow with one vectorised gather.

Training pipeline, in order (each step switchable):
  1. optional random crop: ``'safe'`` keeps every box whole (BBoxSafeRandomCrop), ``'area'`` crops a random
     fraction of the area at the image's aspect ratio and keeps boxes with enough visible area;
  2. horizontal flip; 3. photometric jitter (ColorJitter).
No resize here: the model resizes (TRAIN.SCALES in training, TEST.SCALES at test time) with
detection/ops/resize.py, so training and test images are resampled by the same function.
Test time: the identity.
"""

from __future__ import annotations

import os
import random
from typing import Optional, Sequence, Tuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates over the network

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.augmentations.crops.transforms import BaseCrop  # noqa: E402
from albumentations.core.transforms_interface import BaseTransformInitSchema  # noqa: E402

__all__ = ["RandomAreaCrop", "DetectionTransform", "make_detection_transform", "build_transform"]


class RandomAreaCrop(BaseCrop):
    """Crop a random window covering a fraction ``a ~ U(area_range)`` of the image area, at the image's aspect
    ratio, uniformly placed. Boxes are cut to the window; BboxParams' min_visibility decides which survive."""

    class InitSchema(BaseTransformInitSchema):
        area_range: Tuple[float, float]

    def __init__(self, area_range: Tuple[float, float] = (0.3, 1.0), p: float = 1.0):
        super().__init__(p=p)
        lo, hi = float(area_range[0]), float(area_range[1])
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"RandomAreaCrop: area_range must satisfy 0 < lo <= hi <= 1, got {area_range!r}")
        self.area_range = (lo, hi)

    def get_params_dependent_on_data(self, params, data):
        h, w = params["shape"][:2]
        side = np.sqrt(self.py_random.uniform(*self.area_range))
        ch, cw = max(1, int(round(h * side))), max(1, int(round(w * side)))
        y0 = self.py_random.randint(0, h - ch)
        x0 = self.py_random.randint(0, w - cw)
        return {"crop_coords": (x0, y0, x0 + cw, y0 + ch)}

    def get_transform_init_args_names(self):
        return ("area_range",)


class DetectionTransform:
    """Callable ``(image uint8 [H,W,3] RGB, boxes float32 [N,4] xyxy) -> (image, boxes [M,4], keep int64 [M])``:
    ``keep`` indexes the input boxes that survived (gather labels/flags with it). An empty pipeline is the
    identity (no copy).
    """

    def __init__(self, transforms: Sequence, min_visibility: float = 0.0, seed: Optional[int] = None):
        self.transforms = list(transforms)
        self.compose = None
        if self.transforms:
            self.compose = A.Compose(
                self.transforms,
                bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_ids"], min_visibility=min_visibility,
                                         min_area=0.0, min_width=0.0, min_height=0.0, clip=True,
                                         filter_invalid_bboxes=True),
            )
        self.set_seed(seed)

    def set_seed(self, seed: Optional[int]) -> None:
        """Reseed all random choices (one shared numpy Generator and one random.Random for every step)."""
        if self.compose is not None:
            seed = None if seed is None else int(seed) % (2**32)
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray, boxes: np.ndarray):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if self.compose is None:
            return image, boxes, np.arange(boxes.shape[0], dtype=np.int64)
        out = self.compose(image=image, bboxes=boxes, box_ids=np.arange(boxes.shape[0], dtype=np.int64))
        img = out["image"]
        new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        keep = np.asarray(out["box_ids"], dtype=np.int64).reshape(-1)
        if not img.flags["C_CONTIGUOUS"]:
            img = np.ascontiguousarray(img)
        return img, new_boxes, keep

    def __repr__(self):
        return f"DetectionTransform({self.transforms})"


def make_detection_transform(hflip_prob: float = 0.0, color_jitter: float = 0.0, color_jitter_prob: float = 0.8,
                             crop: Optional[str] = None, crop_prob: float = 0.5, crop_area: Tuple[float, float] = (0.3, 1.0),
                             min_visibility: float = 0.0, seed: Optional[int] = None) -> DetectionTransform:
    """Build the pipeline from plain arguments (see the module docstring for the order).

    hflip_prob: probability of a horizontal flip. color_jitter: brightness/contrast/saturation amplitude (hue a
    quarter of it), applied with probability color_jitter_prob; 0 = off. crop: None, 'safe' (keeps all boxes)
    or 'area' (area fraction in crop_area), applied with probability crop_prob. min_visibility: a box cut by a
    crop is kept if at least this fraction of its area remains. seed: RNG seed (None = nondeterministic).
    """
    ts = []
    if crop == "safe":
        ts.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=crop_prob))
    elif crop == "area":
        ts.append(RandomAreaCrop(area_range=tuple(crop_area), p=crop_prob))
    elif crop not in (None, "", "none"):
        raise ValueError(f"unknown crop mode {crop!r}; expected None, 'safe' or 'area'")
    if hflip_prob > 0:
        ts.append(A.HorizontalFlip(p=hflip_prob))
    if color_jitter > 0:
        ts.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                hue=min(0.5, color_jitter / 4), p=color_jitter_prob))
    return DetectionTransform(ts, min_visibility=min_visibility, seed=seed)


def build_transform(cfg, is_train: bool) -> DetectionTransform:
    """The training pipeline from TRAIN.USE_FLIPPED and AUG.*, or the test one (identity); the model resizes. Seeded from RNG_SEED (< 0: unseeded); loader workers reseed it."""
    seed = int(cfg.RNG_SEED) if int(cfg.RNG_SEED) >= 0 else None
    if not is_train:
        return make_detection_transform(seed=seed)
    aug = cfg.AUG
    return make_detection_transform(
        hflip_prob=float(aug.HFLIP_PROB) if cfg.TRAIN.USE_FLIPPED else 0.0,
        color_jitter=float(aug.COLOR_JITTER_STRENGTH) if aug.COLOR_JITTER else 0.0,
        crop=aug.RANDOM_CROP_MODE if aug.RANDOM_CROP else None, crop_prob=float(aug.RANDOM_CROP_PROB),
        crop_area=tuple(aug.RANDOM_CROP_SCALE), min_visibility=float(aug.MIN_BOX_VISIBILITY), seed=seed)
