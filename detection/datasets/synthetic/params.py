"""Parameters and constants of the synthetic datasets (what a manifest stores; same parameters -> same files)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "SHAPES", "DEFAULT_DETECTION_CLASSES", "DEFAULT_CLASSIFICATION_CLASSES", "COCO_CATEGORY_IDS",
    "COCO_IMAGE_ROOT", "JPEG_QUALITY", "MANIFEST", "SYNTHETIC_VERSION", "GENERATOR_NAME",
    "DetectionParams", "ClassificationParams",
]

# Bump when the rendering changes: a dataset written by another version is regenerated.
SYNTHETIC_VERSION = 1
# The generator's name in manifests and XML files: kept from the module's first home (detection/data/synthetic.py)
# so that datasets written before the move are still recognised (and the files stay byte-identical).
GENERATOR_NAME = "detection.data.synthetic"

SHAPES = ("circle", "square", "triangle", "ellipse", "rectangle", "star", "cross")
DEFAULT_DETECTION_CLASSES = ("circle", "square", "triangle")
DEFAULT_CLASSIFICATION_CLASSES = ("circle", "square")
# Deliberately non-contiguous COCO category ids, by position in the class list.
COCO_CATEGORY_IDS = (1, 3, 7, 8, 12, 15, 21)
COCO_IMAGE_ROOT = "VOC2007/JPEGImages"  # relative to <out>
JPEG_QUALITY = 95
MANIFEST = "manifest.json"

# Seed-sequence tags, so detection and classification images of the same seed differ.
TAG_DETECTION = 0xDE7
TAG_CLASSIFICATION = 0xC1A


def _check_classes(classes: Sequence[str], min_count: int) -> tuple:
    classes = tuple(str(c).strip() for c in classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape class(es) {unknown}; choose from {list(SHAPES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate classes in {list(classes)}")
    if len(classes) < min_count:
        raise ValueError(f"need at least {min_count} classes, got {list(classes)}")
    return classes


@dataclass(frozen=True)
class DetectionParams:
    """Everything that determines a synthetic detection dataset (stored in its manifest)."""

    num_train: int = 120
    num_val: int = 0
    num_test: int = 40
    width: int = 320
    height: int = 240
    seed: int = 0
    classes: tuple = DEFAULT_DETECTION_CLASSES
    min_size: int = 20          # object extent in pixels, before rotation
    max_size: int = 120
    max_objects: int = 6        # objects per image: uniform in 1..max_objects (fewer if they do not fit)
    p_truncated: float = 0.15   # chance that an object is placed across the image border
    p_difficult: float = 0.06   # chance that an object is tiny (drawn below min_size) and marked difficult
    max_same_iou: float = 0.4   # two objects of one class overlap with box IoU below this
    max_occlusion: float = 0.35  # at most this fraction of an object is hidden by later ones
    p_cluster: float = 0.0      # chance that an object is placed over or against an earlier one (crowds)

    def __post_init__(self):
        object.__setattr__(self, "classes", _check_classes(self.classes, 1))
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.num_train + self.num_val + self.num_test == 0:
            raise ValueError("the dataset would have no images")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image size {self.width}x{self.height} is too small (min 32x32)")
        if not 4 <= self.min_size <= self.max_size:
            raise ValueError(f"need 4 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.max_objects < 1:
            raise ValueError("max_objects must be >= 1")
        if len(self.classes) > len(COCO_CATEGORY_IDS):
            raise ValueError(f"at most {len(COCO_CATEGORY_IDS)} classes")
        if not 0.0 < self.max_same_iou <= 0.9 or not 0.0 <= self.max_occlusion <= 0.6 or \
                not 0.0 <= self.p_cluster <= 1.0:
            raise ValueError(f"need 0 < max_same_iou <= 0.9, 0 <= max_occlusion <= 0.6 and 0 <= p_cluster <= 1, "
                             f"got {self.max_same_iou}, {self.max_occlusion}, {self.p_cluster}")

    @property
    def category_ids(self) -> dict:
        return {c: COCO_CATEGORY_IDS[i] for i, c in enumerate(self.classes)}

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        for name in ("max_same_iou", "max_occlusion", "p_cluster"):  # only when set: earlier manifests still match
            if d[name] == DetectionParams.__dataclass_fields__[name].default:
                del d[name]
        return d


@dataclass(frozen=True)
class ClassificationParams:
    """Everything that determines a synthetic image-folder classification dataset (counts are per class)."""

    num_train: int = 100
    num_val: int = 30
    width: int = 128
    height: int = 128
    seed: int = 0
    classes: tuple = DEFAULT_CLASSIFICATION_CLASSES

    def __post_init__(self):
        object.__setattr__(self, "classes", _check_classes(self.classes, 2))
        if self.num_train < 0 or self.num_val < 0 or self.num_train + self.num_val == 0:
            raise ValueError("need num_train, num_val >= 0 and at least one image")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image size {self.width}x{self.height} is too small (min 32x32)")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        return d
