"""Drawing synthetic images: cluttered backgrounds and shape objects with their visible masks and tight boxes.

Each image has a cluttered background (colour gradient, low-frequency blotches, low-contrast lines, arcs and
shapes of *non-object* types, sensor noise) and objects of the given classes with random colour, size, rotation and
texture (solid, stripes, noise). Boxes are computed from the *visible* drawn pixels (VOC's rule: the box of the
visible extent), so they are tight by construction. Overlaps are limited: an object keeps at least ~60 % of its
pixels visible and two objects of the same class have box IoU < 0.5. Objects cut by the image border are marked
``truncated`` (their box touches the border); tiny ones (drawn below ``min_size``) are marked ``difficult``.

Every image has its own random stream (seed, image number), so it does not depend on the other images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from detection.datasets.synthetic.params import (
    SHAPES,
    TAG_CLASSIFICATION,
    TAG_DETECTION,
    ClassificationParams,
    DetectionParams,
)
from detection.evaluation.voc_ap import bbox_overlaps

__all__ = ["SyntheticObject", "SyntheticImage", "render_detection_image", "render_classification_image"]


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
    """IoU of two xyxy boxes [4] in continuous pixels."""
    return float(bbox_overlaps(a, b, pixel_offset=0.0)[0, 0])


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
    cluster: bool = False  # placed over or against an object placed before it (DetectionParams.p_cluster)


def _place(rng, h, w, spec: _Spec, placed: list, labelmap: np.ndarray, max_same_iou: float,
           max_occlusion: float, tries: int = 30):
    """Find a position for one object; returns (full_mask [h, w] bool, truncated) or None."""
    for attempt in range(tries):
        patch = _shape_patch(rng, spec.shape, spec.size)
        ph, pw = patch.shape
        if spec.cluster and placed and attempt < tries - 10 and not (spec.truncate or pw > w or ph > h):
            # centred in an earlier object's box grown by half this patch: the two overlap or touch
            bx1, by1, bx2, by2 = placed[int(rng.integers(0, len(placed)))]["box"]
            cx = rng.uniform(bx1 - pw / 2, bx2 + pw / 2)
            cy = rng.uniform(by1 - ph / 2, by2 + ph / 2)
            x0 = int(np.clip(round(cx - pw / 2), 0, w - pw))
            y0 = int(np.clip(round(cy - ph / 2), 0, h - ph))
        elif spec.truncate or pw > w or ph > h:
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
                if a.label == b.label and _box_iou(a.box, b.box) >= max(0.5, max_same_iou + 0.1):
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
        rng = np.random.default_rng([params.seed, TAG_DETECTION, image_id, attempt])
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
            cluster = bool(params.p_cluster > 0 and rng.random() < params.p_cluster)  # no draw at 0: same images
            specs.append(_Spec(params.classes[label - 1], label, size, truncate, difficult, cluster))
        # big objects first, so small ones are placed in the space left and never hidden under a big one
        specs.sort(key=lambda s: -s.size)
        out = _render_scene(rng, h, w, specs, distractors, params.classes, params.max_same_iou, params.max_occlusion)
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
        rng = np.random.default_rng([params.seed, TAG_CLASSIFICATION, split_tag, class_index, index, attempt])
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
