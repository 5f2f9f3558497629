"""Synthetic datasets the quick start trains on, since no real dataset can be downloaded everywhere.

Two modes, both seeded and byte-for-byte reproducible (same parameters and library versions -> same files):

Detection (``generate_detection_dataset``) writes the real VOC layout plus COCO JSON for the same images::

    <out>/VOC2007/JPEGImages/000001.jpg ...      (cv2.imwrite, JPEG quality 95)
    <out>/VOC2007/Annotations/000001.xml ...     (VOC XML; boxes 1-based inclusive integer pixels)
    <out>/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt   (val.txt only when --num-val > 0)
    <out>/annotations/instances_{trainval,test}.json             (+ _train/_val when --num-val > 0)
    <out>/manifest.json                          (parameters and counts; written last: the "complete" marker)
    <out>/README.txt

  The COCO image root is ``<out>/VOC2007/JPEGImages`` (``file_name`` is ``000001.jpg``): no copies, no symlinks.
  COCO boxes are ``[x, y, w, h]`` in continuous pixels with ``x = xmin - 1`` and ``w = xmax - xmin + 1`` of the
  VOC box, i.e. both describe the same pixels. In the toolkit's xyxy contract the box is
  ``[xmin - 1, ymin - 1, xmax, ymax]``. COCO category ids are deliberately non-contiguous (1, 3, 7, ...), so a
  reader that assumes ``id == index + 1`` fails loudly on this data.

  Each image has a cluttered background (colour gradient, low-frequency blotches, low-contrast lines, arcs and
  shapes of *non-object* types, sensor noise) and 1..max_objects objects of the given classes with random
  colour, size, rotation and texture (solid, stripes, noise). Boxes are computed from the *visible* drawn pixels
  (VOC's rule: the box of the visible extent), so they are tight by construction. Overlaps are limited: an object
  keeps at least ~60 % of its pixels visible and two objects of the same class have box IoU < 0.5. Objects cut by
  the image border are marked ``truncated`` (their box touches the border); tiny ones (drawn below ``min_size``)
  are marked ``difficult``.

Classification (``generate_classification_dataset``) writes an image-folder layout::

    <out>/{train,val}/<class>/<class>_00000.jpg
    <out>/manifest.json, <out>/README.txt

  Class ``k`` images are dominated by 2..4 shapes of type ``classes[k]`` (default circle vs square), sometimes
  with one small shape of another class as a distractor, on the same cluttered backgrounds.

Writing is atomic: everything goes to ``<out>.tmp-<pid>`` and is renamed to ``<out>`` at the end, so an
interrupted run never leaves a ``<out>`` that looks complete. A ``<out>`` with a manifest of the same parameters
(and the expected number of images) is kept as is ("exists"); one with a manifest of other parameters is replaced;
a directory without our manifest is never touched unless ``force=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "SHAPES", "DEFAULT_DETECTION_CLASSES", "DEFAULT_CLASSIFICATION_CLASSES", "COCO_CATEGORY_IDS",
    "COCO_IMAGE_ROOT", "JPEG_QUALITY", "SYNTHETIC_VERSION",
    "DetectionParams", "ClassificationParams", "SyntheticObject", "SyntheticImage",
    "render_detection_image", "render_classification_image", "detection_image_ids",
    "generate_detection_dataset", "generate_classification_dataset", "read_manifest",
]

# Bump when the rendering changes: a dataset written by another version is regenerated.
SYNTHETIC_VERSION = 1
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
_TAG_DET = 0xDE7
_TAG_CLS = 0xC1A


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------

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

    @property
    def category_ids(self) -> dict:
        return {c: COCO_CATEGORY_IDS[i] for i, c in enumerate(self.classes)}

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
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


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------

@dataclass
class SyntheticObject:
    name: str
    label: int                  # 1..K, position in the class list + 1 (0 is background)
    box: np.ndarray             # float32 [4] xyxy continuous pixels of the visible mask (x2 = last column + 1)
    mask: np.ndarray            # bool [H, W], the visible pixels of the object
    truncated: bool             # cut by the image border
    difficult: bool             # tiny
    texture: str
    area: int = 0               # visible pixels

    def voc_box(self) -> list:
        """[xmin, ymin, xmax, ymax], 1-based inclusive integer pixels (VOC)."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in self.box)
        return [x1 + 1, y1 + 1, x2, y2]

    def coco_box(self) -> list:
        """[x, y, w, h] in continuous pixels (COCO)."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in self.box)
        return [x1, y1, x2 - x1, y2 - y1]


@dataclass
class SyntheticImage:
    image: np.ndarray           # uint8 [H, W, 3] RGB, the final image (before JPEG)
    objects: list = field(default_factory=list)
    background: Optional[np.ndarray] = None  # uint8 RGB before objects and sensor noise
    composite: Optional[np.ndarray] = None   # uint8 RGB with objects, before sensor noise

    @property
    def boxes(self) -> np.ndarray:
        return np.stack([o.box for o in self.objects]).astype(np.float32) if self.objects \
            else np.zeros((0, 4), np.float32)

    @property
    def labels(self) -> np.ndarray:
        return np.array([o.label for o in self.objects], dtype=np.int64)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """h in [0, 1), s, v in [0, 1] -> float RGB 0..255."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _shape_points(rng: np.random.Generator, shape: str, size: float) -> Optional[np.ndarray]:
    """Polygon vertices (float [N, 2], centred on 0) of a shape of extent ``size``; None for circle/ellipse."""
    r = size / 2.0
    if shape == "square":
        ang = math.radians(rng.uniform(-25, 25))
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    elif shape == "rectangle":
        ang = math.radians(rng.uniform(0, 180))
        q = rng.uniform(0.4, 0.62)
        pts = np.array([[-r, -r * q], [r, -r * q], [r, r * q], [-r, r * q]])
    elif shape == "triangle":
        ang = math.radians(rng.uniform(0, 360))
        base = np.radians([90.0, 210.0, 330.0]) + np.radians(rng.uniform(-8, 8, 3))
        rad = r * rng.uniform(0.9, 1.08, 3)
        pts = np.stack([rad * np.cos(base), rad * np.sin(base)], axis=1)
    elif shape == "star":
        ang = math.radians(rng.uniform(0, 360))
        inner = rng.uniform(0.4, 0.5)
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * inner)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    elif shape == "cross":
        ang = math.radians(rng.uniform(-20, 20))
        a = r * rng.uniform(0.28, 0.38)
        pts = np.array([[-a, -r], [a, -r], [a, -a], [r, -a], [r, a], [a, a], [a, r], [-a, r], [-a, a],
                        [-r, a], [-r, -a], [-a, -a]])
    else:
        return None
    c, s = math.cos(ang), math.sin(ang)
    return pts @ np.array([[c, s], [-s, c]])


def _shape_patch(rng: np.random.Generator, shape: str, size: float) -> np.ndarray:
    """A tight bool mask of one shape (no anti-aliasing, so the mask is exactly the painted pixels)."""
    pad = int(math.ceil(size * 0.75)) + 2
    dim = 2 * pad + 1
    patch = np.zeros((dim, dim), np.uint8)
    if shape in ("circle", "ellipse"):
        ax = size / 2.0
        ay = ax if shape == "circle" else ax * rng.uniform(0.45, 0.7)
        ang = 0.0 if shape == "circle" else rng.uniform(0, 180)
        # shift=4: 1/16-pixel precision for the centre and axes
        cv2.ellipse(patch, (pad * 16, pad * 16), (max(1, int(round(ax * 16))), max(1, int(round(ay * 16)))),
                    ang, 0, 360, 1, -1, cv2.LINE_8, 4)
    else:
        pts = _shape_points(rng, shape, size) + pad
        cv2.fillPoly(patch, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    ys, xs = np.nonzero(patch)
    if len(xs) == 0:
        patch[pad, pad] = 1
        ys, xs = np.array([pad]), np.array([pad])
    return patch[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(bool)


def _texture(rng: np.random.Generator, h: int, w: int, color: np.ndarray) -> tuple:
    """A float [h, w, 3] texture around ``color``: solid, stripes or noise."""
    kind = str(rng.choice(["solid", "stripes", "noise"], p=[0.45, 0.3, 0.25]))
    if kind == "solid":
        shade = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.12), max(h, w))
        shade = shade[:h, None] if rng.random() < 0.5 else shade[None, :w]
        tex = color[None, None, :] * np.broadcast_to(shade, (h, w))[..., None]
    elif kind == "stripes":
        other = color * rng.uniform(0.3, 0.55) if color.mean() > 110 else color + (255 - color) * rng.uniform(0.5, 0.7)
        period = rng.uniform(4, 11)
        theta = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) % period
        tex = np.where((phase < period / 2)[..., None], color[None, None, :], other[None, None, :])
    else:
        low = rng.uniform(0.55, 1.2, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
        low = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        tex = color[None, None, :] * low[..., None] + rng.normal(0, 18, (h, w, 1))
    return np.clip(tex, 0, 255).astype(np.float32), kind


def _object_color(rng: np.random.Generator, refs: Sequence[np.ndarray]) -> np.ndarray:
    """A saturated colour that stands out from the background under it and from the objects it touches."""
    best, best_d = None, -1.0
    for _ in range(12):
        c = _hsv_to_rgb(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.4, 1.0))
        d = min(float(np.linalg.norm(c - r)) for r in refs)
        if d >= 90:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _background(rng: np.random.Generator, h: int, w: int, distractors: Sequence[str]) -> np.ndarray:
    """Float [h, w, 3] clutter: gradient, blotches, low-contrast lines/arcs and non-object shapes."""
    c1 = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.9))
    c2 = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.9))
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    blot = rng.uniform(-25, 25, (max(2, h // 48), max(2, w // 48), 3)).astype(np.float32)
    img = img + cv2.resize(blot, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.float32)

    def low_contrast(x: int, y: int) -> tuple:
        base = img[min(max(y, 0), h - 1), min(max(x, 0), w - 1)]
        delta = rng.uniform(18, 45) * (1 if rng.random() < 0.5 else -1)
        return tuple(float(v) for v in np.clip(base + delta + rng.uniform(-12, 12, 3), 0, 255))

    scale = math.sqrt(h * w) / 277.0  # 1 at 320x240
    for _ in range(int(rng.integers(2, 8))):  # lines
        p1 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        p2 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        cv2.line(img, p1, p2, low_contrast(*p1), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):  # arcs (open, thin)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        ax = int(rng.uniform(10, 70) * scale) + 1
        start = rng.uniform(0, 360)
        cv2.ellipse(img, (cx, cy), (ax, int(ax * rng.uniform(0.5, 1.0)) + 1), rng.uniform(0, 180), start,
                    start + rng.uniform(60, 200), low_contrast(cx, cy), int(rng.integers(1, 3)), cv2.LINE_AA)
    if distractors:
        for _ in range(int(rng.integers(0, 4))):  # faint shapes of types that are not classes
            shape = str(rng.choice(list(distractors)))
            m = _shape_patch(rng, shape, rng.uniform(15, 80) * scale)
            mh, mw = m.shape
            y0, x0 = int(rng.integers(-mh // 2, h - mh // 2)), int(rng.integers(-mw // 2, w - mw // 2))
            ys, xs = np.nonzero(m)
            ys, xs = ys + y0, xs + x0
            keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            ys, xs = ys[keep], xs[keep]
            alpha = rng.uniform(0.12, 0.3)
            color = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 1.0))
            img[ys, xs] = img[ys, xs] * (1 - alpha) + color * alpha
    return np.clip(img, 0, 255)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _mask_box(mask: np.ndarray) -> Optional[np.ndarray]:
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


@dataclass
class _Spec:
    shape: str
    label: int
    size: float
    truncate: bool
    difficult: bool


def _place(rng, h, w, spec: _Spec, placed: list, labelmap: np.ndarray, max_same_iou: float,
           max_occlusion: float, tries: int = 30):
    """Find a position for one object; returns (full_mask [h, w] bool, truncated) or None."""
    for _ in range(tries):
        patch = _shape_patch(rng, spec.shape, spec.size)
        ph, pw = patch.shape
        if spec.truncate or pw > w or ph > h:
            side = int(rng.integers(0, 4))
            cut = rng.uniform(0.15, 0.55)
            if side in (0, 1):  # left / right
                x0 = -int(round(pw * cut)) if side == 0 else w - pw + int(round(pw * cut))
                y0 = int(rng.integers(min(0, h - ph), max(0, h - ph) + 1))
            else:  # top / bottom
                y0 = -int(round(ph * cut)) if side == 2 else h - ph + int(round(ph * cut))
                x0 = int(rng.integers(min(0, w - pw), max(0, w - pw) + 1))
        else:
            x0, y0 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        # clip the patch to the image
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1, sy1 = min(pw, w - x0), min(ph, h - y0)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        full = np.zeros((h, w), bool)
        full[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] = patch[sy0:sy1, sx0:sx1]
        total, visible = int(patch.sum()), int(full.sum())
        if visible < 0.4 * total or visible < 12:
            continue
        box = _mask_box(full)
        ok = True
        for j, other in enumerate(placed):
            cur = labelmap == j
            inter = int((cur & full).sum())
            if inter and (other["visible0"] and (int(cur.sum()) - inter) < (1 - max_occlusion) * other["visible0"]):
                ok = False
                break
            if inter and inter > 0.5 * visible:
                ok = False
                break
            if other["label"] == spec.label and _box_iou(box, _mask_box(cur) if cur.any() else box * 0) >= max_same_iou:
                ok = False
                break
        if ok:
            return full, visible < total
    return None


def _render_scene(rng, h, w, specs: Sequence[_Spec], distractors: Sequence[str], names: Sequence[str],
                  max_same_iou: float = 0.4, max_occlusion: float = 0.35, check: bool = True,
                  noise: bool = True) -> Optional[SyntheticImage]:
    bg = _background(rng, h, w, distractors)
    canvas = bg.copy()
    labelmap = np.full((h, w), -1, np.int32)
    placed = []
    for spec in specs:
        res = _place(rng, h, w, spec, placed, labelmap, max_same_iou, max_occlusion)
        if res is None:
            continue
        full, truncated = res
        ys, xs = np.nonzero(full)
        y0, x0 = ys.min(), xs.min()
        free = full & (labelmap < 0)
        refs = [canvas[free].mean(axis=0) if free.any() else canvas[full].mean(axis=0)]
        box = _mask_box(full) + np.array([-3, -3, 3, 3], np.float32)
        for j, other in enumerate(placed):  # objects it overlaps or touches: keep the edge between them visible
            if _box_iou(box, other["box"]) > 0:
                refs.append(other["color"])
        color = _object_color(rng, refs)
        tex, kind = _texture(rng, ys.max() - y0 + 1, xs.max() - x0 + 1, color)
        canvas[ys, xs] = tex[ys - y0, xs - x0]
        labelmap[full] = len(placed)
        placed.append(dict(spec=spec, label=spec.label, visible0=int(full.sum()), truncated=truncated, texture=kind,
                           color=color, box=_mask_box(full)))
    objects = []
    for j, p in enumerate(placed):
        mask = labelmap == j
        box = _mask_box(mask)
        if box is None:
            return None
        objects.append(SyntheticObject(name=names[p["label"] - 1], label=p["label"], box=box, mask=mask,
                                       truncated=bool(p["truncated"]), difficult=bool(p["spec"].difficult),
                                       texture=p["texture"], area=int(mask.sum())))
    if check:
        for i, a in enumerate(objects):
            if a.truncated and not (a.box[0] == 0 or a.box[1] == 0 or a.box[2] == w or a.box[3] == h):
                return None  # the border part got occluded: the box would not show the truncation
            for b in objects[i + 1:]:
                if a.label == b.label and _box_iou(a.box, b.box) >= 0.5:
                    return None
    final = canvas
    if noise:
        final = canvas + rng.normal(0, rng.uniform(2, 6), canvas.shape).astype(np.float32)
    return SyntheticImage(image=np.clip(final, 0, 255).round().astype(np.uint8), objects=objects,
                          background=np.clip(bg, 0, 255).round().astype(np.uint8),
                          composite=np.clip(canvas, 0, 255).round().astype(np.uint8))


def render_detection_image(params: DetectionParams, image_id: int) -> SyntheticImage:
    """Render detection image number ``image_id`` (1-based, as in its file name) of a dataset.

    Every image has its own random stream (seed, image_id), so an image does not depend on the split sizes.
    """
    h, w = params.height, params.width
    distractors = [s for s in SHAPES if s not in params.classes]
    max_size = min(params.max_size, int(0.9 * min(h, w)))
    min_size = min(params.min_size, max_size)
    for attempt in range(50):
        rng = np.random.default_rng([params.seed, _TAG_DET, image_id, attempt])
        n = int(rng.integers(1, params.max_objects + 1))
        specs = []
        for _ in range(n):
            label = int(rng.integers(0, len(params.classes))) + 1
            difficult = bool(rng.random() < params.p_difficult)
            if difficult:
                size = rng.uniform(max(6.0, 0.35 * min_size), max(7.0, 0.6 * min_size))
            else:
                size = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
            truncate = bool(not difficult and rng.random() < params.p_truncated)
            specs.append(_Spec(params.classes[label - 1], label, size, truncate, difficult))
        # big objects first, so small ones are placed in the space left and never hidden under a big one
        specs.sort(key=lambda s: -s.size)
        out = _render_scene(rng, h, w, specs, distractors, params.classes)
        if out is not None and out.objects:
            return out
    raise RuntimeError(f"could not render synthetic image {image_id} with {params}")


def render_classification_image(params: ClassificationParams, split: str, class_index: int,
                                index: int) -> SyntheticImage:
    """Render image ``index`` of class ``class_index`` in ``split`` ("train" or "val")."""
    h, w = params.height, params.width
    split_tag = {"train": 0, "val": 1}[split]
    distractors = [s for s in SHAPES if s not in params.classes]
    short = min(h, w)
    for attempt in range(50):
        rng = np.random.default_rng([params.seed, _TAG_CLS, split_tag, class_index, index, attempt])
        specs = [_Spec(params.classes[class_index], class_index + 1, rng.uniform(0.16, 0.42) * short,
                       bool(rng.random() < 0.1), False) for _ in range(int(rng.integers(2, 5)))]
        if rng.random() < 0.4:  # one small distractor of another class: "dominated by", not "only"
            other = int(rng.choice([k for k in range(len(params.classes)) if k != class_index]))
            specs.append(_Spec(params.classes[other], other + 1, rng.uniform(0.1, 0.18) * short, False, False))
        specs.sort(key=lambda s: -s.size)
        out = _render_scene(rng, h, w, specs, distractors, params.classes, max_same_iou=0.5, check=False)
        if out is not None and sum(o.label == class_index + 1 for o in out.objects) >= 1:
            return out
    raise RuntimeError(f"could not render synthetic {split} image {index} of class {class_index}")


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------

def _write_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"cannot encode {path} as JPEG")
    path.write_bytes(buf.tobytes())


def _voc_xml(stem: str, width: int, height: int, objects: Sequence[SyntheticObject]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "detection synthetic"
    ET.SubElement(source, "annotation").text = GENERATOR_NAME
    ET.SubElement(source, "image").text = "synthetic"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = o.name
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(o.truncated))
        ET.SubElement(el, "difficult").text = str(int(o.difficult))
        bb = ET.SubElement(el, "bndbox")
        for key, v in zip(("xmin", "ymin", "xmax", "ymax"), o.voc_box()):
            ET.SubElement(bb, key).text = str(v)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _segmentation(mask: np.ndarray, box: list) -> list:
    """COCO polygons of a visible mask (outer contours); the box polygon when a contour is degenerate."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            polys.append([float(v) + 0.5 for v in c.reshape(-1)])  # pixel centres
    if not polys:
        x, y, bw, bh = box
        polys = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    return [[round(v, 1) for v in p] for p in polys]


def detection_image_ids(params: DetectionParams) -> dict:
    """{split: [image ids]}: train first, then val, then test; trainval = train + val."""
    n1, n2 = params.num_train, params.num_train + params.num_val
    ids = {"train": list(range(1, n1 + 1)), "val": list(range(n1 + 1, n2 + 1)),
           "test": list(range(n2 + 1, n2 + params.num_test + 1))}
    ids["trainval"] = ids["train"] + ids["val"]
    return ids


def _coco_json(params: DetectionParams, ids: Sequence[int], samples: dict) -> dict:
    cat_ids = params.category_ids
    images, anns = [], []
    for image_id in ids:
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": params.width,
                       "height": params.height})
        for o in samples[image_id]:
            box = o.coco_box()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_ids[o.name],
                         "bbox": [float(v) for v in box], "area": float(o.area), "iscrowd": 0,
                         "segmentation": _segmentation(o.mask, box)})
    return {
        "info": {"description": "detection synthetic shapes", "version": str(SYNTHETIC_VERSION),
                 "image_root": COCO_IMAGE_ROOT},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": cat_ids[c], "name": c, "supercategory": "shape"} for c in params.classes],
    }


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_manifest(out) -> Optional[dict]:
    """The manifest of a complete dataset at ``out``, or None."""
    try:
        with open(Path(out) / MANIFEST) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("generator") == GENERATOR_NAME else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(out: Path) -> None:
    """Remove ``<out>.tmp-<pid>`` folders of runs that died (their process is gone)."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f"{out.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _existing_state(out: Path, manifest_core: dict, count_images: Callable[[Path], int]) -> str:
    """'missing', 'same' (complete, same parameters), 'other' (ours, other parameters or damaged), 'foreign'."""
    if not out.exists():
        return "missing"
    m = read_manifest(out)
    if m is None:
        return "foreign"
    same = all(m.get(k) == v for k, v in manifest_core.items())
    if same and count_images(out) == m.get("num_images"):
        return "same"
    return "other"


def _generate(out, manifest_core: dict, write: Callable[[Path], dict], count_images: Callable[[Path], int],
              force: bool, log: Callable[[str], None]) -> Path:
    out = Path(out)
    state = _existing_state(out, manifest_core, count_images)
    if state == "same":
        log(f"{out} exists (complete, same parameters): nothing to do")
        return out
    if state == "foreign" and not force:
        raise FileExistsError(f"{out} exists and is not a synthetic dataset of this generator (no {MANIFEST}); "
                              f"remove it or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.time()
        extra = write(tmp)
        manifest = dict(manifest_core)
        manifest.update(extra)
        _write_json(tmp / MANIFEST, manifest)  # last: a folder with a manifest is complete
        if out.exists():
            if _existing_state(out, manifest_core, count_images) == "same":  # a concurrent run finished first
                shutil.rmtree(tmp, ignore_errors=True)
                log(f"{out} exists (complete, same parameters): nothing to do")
                return out
            old = out.parent / f"{out.name}.old-{os.getpid()}"
            log(f"replacing {out} ({'not ours' if state == 'foreign' else 'other parameters or incomplete'})")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        log(f"wrote {out} in {time.time() - t0:.1f} s: {extra.get('summary', '')}")
        return out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _count_jpegs(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jpg")) if folder.is_dir() else 0


_DET_README = """\
Synthetic shapes detection dataset, written by {generator} (version {version}).
Regenerate: python tools/make_synthetic_dataset.py --out <this folder> (parameters in manifest.json)

VOC layout:  VOC2007/JPEGImages/*.jpg, VOC2007/Annotations/*.xml, VOC2007/ImageSets/Main/<split>.txt
             boxes are 1-based inclusive integer pixels; toolkit xyxy = [xmin - 1, ymin - 1, xmax, ymax]
COCO JSON:   annotations/instances_<split>.json, image root = {image_root} (file_name = 000001.jpg)
             bbox = [x, y, w, h] continuous pixels; category ids are non-contiguous: {category_ids}
Classes (labels 1..K in this order): {classes}
Splits: {splits}
"""

_CLS_README = """\
Synthetic shapes classification dataset (image-folder layout), written by {generator} (version {version}).
Regenerate: python tools/make_synthetic_dataset.py --mode classification --out <this folder>

<split>/<class>/*.jpg; class k images are dominated by shapes of type classes[k].
Classes (labels 0..K-1 in this order): {classes}
Images per class: {splits}
"""


def generate_detection_dataset(out, params: Optional[DetectionParams] = None, force: bool = False,
                               log: Callable[[str], None] = print, **overrides) -> Path:
    """Write (or keep, if complete with the same parameters) a synthetic VOC + COCO detection dataset at ``out``.

    ``params`` or keyword overrides of ``DetectionParams`` fields. Returns ``Path(out)``.
    """
    params = dataclasses.replace(params or DetectionParams(), **overrides)
    core = {"generator": GENERATOR_NAME, "version": SYNTHETIC_VERSION, "mode": "detection",
            "params": params.to_json()}
    ids = detection_image_ids(params)

    def write(tmp: Path) -> dict:
        voc = tmp / "VOC2007"
        for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (voc / d).mkdir(parents=True)
        (tmp / "annotations").mkdir()
        samples = {}
        stats = {"objects": 0, "truncated": 0, "difficult": 0}
        for image_id in range(1, params.num_train + params.num_val + params.num_test + 1):
            s = render_detection_image(params, image_id)
            stem = f"{image_id:06d}"
            _write_jpeg(voc / "JPEGImages" / f"{stem}.jpg", s.image)
            (voc / "Annotations" / f"{stem}.xml").write_bytes(_voc_xml(stem, params.width, params.height,
                                                                        s.objects))
            samples[image_id] = s.objects
            stats["objects"] += len(s.objects)
            stats["truncated"] += sum(o.truncated for o in s.objects)
            stats["difficult"] += sum(o.difficult for o in s.objects)
        splits = ["train", "val", "trainval", "test"] if params.num_val else ["train", "trainval", "test"]
        coco_splits = ["train", "val", "trainval", "test"] if params.num_val else ["trainval", "test"]
        for split in splits:
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(
                "".join(f"{i:06d}\n" for i in ids[split]))
        for split in coco_splits:
            _write_json(tmp / "annotations" / f"instances_{split}.json", _coco_json(params, ids[split], samples))
        split_counts = {k: len(ids[k]) for k in splits}
        (tmp / "README.txt").write_text(_DET_README.format(
            generator=GENERATOR_NAME, version=SYNTHETIC_VERSION, image_root=COCO_IMAGE_ROOT,
            category_ids=params.category_ids, classes=list(params.classes), splits=split_counts))
        n = len(samples)
        return {"num_images": n, "splits": split_counts, "classes": list(params.classes),
                "category_ids": params.category_ids, "coco_image_root": COCO_IMAGE_ROOT,
                "voc_root": "VOC2007", "coco_annotations": {k: f"annotations/instances_{k}.json" for k in coco_splits},
                "num_objects": stats["objects"], "num_truncated": stats["truncated"],
                "num_difficult": stats["difficult"],
                "summary": f"{n} images, {stats['objects']} objects ({stats['truncated']} truncated, "
                           f"{stats['difficult']} difficult), classes {list(params.classes)}"}

    return _generate(out, core, write, lambda p: _count_jpegs(p / "VOC2007" / "JPEGImages"), force, log)


def generate_classification_dataset(out, params: Optional[ClassificationParams] = None, force: bool = False,
                                    log: Callable[[str], None] = print, **overrides) -> Path:
    """Write (or keep) a synthetic image-folder classification dataset ``<out>/{train,val}/<class>/*.jpg``."""
    params = dataclasses.replace(params or ClassificationParams(), **overrides)
    core = {"generator": GENERATOR_NAME, "version": SYNTHETIC_VERSION, "mode": "classification",
            "params": params.to_json()}

    def write(tmp: Path) -> dict:
        counts = {"train": params.num_train, "val": params.num_val}
        n = 0
        for split, count in counts.items():
            if count == 0:
                continue
            for k, cls in enumerate(params.classes):
                d = tmp / split / cls
                d.mkdir(parents=True)
                for i in range(count):
                    _write_jpeg(d / f"{cls}_{i:05d}.jpg", render_classification_image(params, split, k, i).image)
                    n += 1
        (tmp / "README.txt").write_text(_CLS_README.format(
            generator=GENERATOR_NAME, version=SYNTHETIC_VERSION, classes=list(params.classes), splits=counts))
        return {"num_images": n, "splits": counts, "classes": list(params.classes),
                "summary": f"{n} images, classes {list(params.classes)}, per class {counts}"}

    return _generate(out, core, write, _count_jpegs, force, log)
