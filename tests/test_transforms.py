"""Albumentations pipelines: boxes keep framing their pixels through crop, flip and jitter (the model resizes)."""

import cv2
import numpy as np
import pytest

from detection.config import get_default_config
from detection.data.transforms import build_transform, make_detection_transform
from fixtures_data import COLOURS, draw_image

# well separated rectangles (>= 12 px apart), one touching the right and bottom border (x2 == W, y2 == H)
H, W = 120, 160
BOXES = np.array([[8, 10, 40, 50], [60, 6, 100, 30], [120, 70, 160, 120], [20, 70, 70, 110]], np.float32)


def _components(img: np.ndarray):
    """Continuous xyxy boxes of the blobs that differ from the (median) background colour."""
    bg = np.median(img.reshape(-1, 3), axis=0)
    fg = (np.abs(img.astype(np.int16) - bg).max(axis=2) > 40).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
    out = []
    for x, y, w, h, area in stats[1:]:
        if area >= 4:
            out.append([x, y, x + w, y + h])
    return np.array(out, np.float32).reshape(-1, 4)


def _match(boxes, comps, tol):
    """For each box, the index of the component equal to it within tol px (or -1)."""
    idx = []
    for b in boxes:
        d = np.abs(comps - b).max(axis=1) if len(comps) else np.array([])
        idx.append(int(np.argmin(d)) if len(d) and d.min() <= tol else -1)
    return idx


@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_boxes_frame_their_rectangles_safe_crop(jitter):
    img = draw_image(H, W, BOXES)
    t = make_detection_transform(hflip_prob=0.5, color_jitter=jitter,
                                 color_jitter_prob=1.0, crop="safe", crop_prob=0.7)
    sizes = set()
    for seed in range(40):
        t.set_seed(seed)
        out, boxes, keep = t(img, BOXES)
        sizes.add(out.shape[:2])
        assert out.dtype == np.uint8 and boxes.dtype == np.float32
        assert keep.tolist() == [0, 1, 2, 3], f"seed {seed}: the safe crop must keep every box"
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= out.shape[1] + 1e-3).all()
        assert (boxes[:, 3] <= out.shape[0] + 1e-3).all()
        comps = _components(out)
        assert len(comps) == 4, f"seed {seed}"
        m = _match(boxes, comps, tol=2.0)
        assert -1 not in m and len(set(m)) == 4, f"seed {seed}: {boxes} vs {comps}"
        if jitter == 0:  # identity: the box's pixels still have its rectangle's colour
            for b, k in zip(boxes, keep):
                cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
                assert np.abs(out[cy, cx].astype(int) - COLOURS[k]).max() <= 12, f"seed {seed}, box {k}"
    assert len(sizes) > 3  # several crops were drawn


def test_boxes_frame_their_rectangles_area_crop():
    img = draw_image(H, W, BOXES)
    t = make_detection_transform(hflip_prob=0.5, crop="area", crop_prob=1.0,
                                 crop_area=(0.3, 0.8), min_visibility=0.3)
    dropped = 0
    for seed in range(40):
        t.set_seed(seed)
        out, boxes, keep = t(img, BOXES)
        dropped += 4 - len(keep)
        comps = _components(out)
        m = _match(boxes, comps, tol=2.0)  # kept boxes are cut to the crop and frame the visible part
        assert -1 not in m, f"seed {seed}: {boxes} vs {comps}"
        orig_area = (BOXES[keep, 2] - BOXES[keep, 0]) * (BOXES[keep, 3] - BOXES[keep, 1])
        assert len(np.unique(keep)) == len(keep) and (orig_area > 0).all()
    assert dropped > 0  # some boxes fell (mostly) outside a crop and were dropped with their ids


def test_border_boxes_survive_and_flip_is_continuous():
    t = make_detection_transform(hflip_prob=1.0)
    img = np.zeros((10, 20, 3), np.uint8)
    boxes = np.array([[15, 0, 20, 10], [0, 2, 1, 3]], np.float32)  # x2 == W, y2 == H; a 1-px box at x=0
    out, nb, keep = t(img, boxes)
    assert keep.tolist() == [0, 1]
    np.testing.assert_allclose(nb, [[0, 0, 5, 10], [19, 2, 20, 3]], atol=1e-4)  # x -> W - x


def test_empty_boxes_pass_through():
    t = make_detection_transform(hflip_prob=0.5, color_jitter=0.2, crop="safe")
    out, boxes, keep = t(np.zeros((30, 40, 3), np.uint8), np.zeros((0, 4), np.float32))
    assert boxes.shape == (0, 4) and keep.shape == (0,) and out.shape[:2] <= (30, 40)


def test_seeded_transform_repeats():
    img = draw_image(H, W, BOXES)
    kw = dict(hflip_prob=0.5, color_jitter=0.3, crop="area", crop_prob=0.5)
    a, b = make_detection_transform(seed=5, **kw), make_detection_transform(seed=5, **kw)
    ra = [a(img, BOXES) for _ in range(6)]
    rb = [b(img, BOXES) for _ in range(6)]
    for x, y in zip(ra, rb):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])
    assert len({r[0].shape for r in ra}) > 1 or len({r[0].tobytes() for r in ra}) > 1
    b.set_seed(5)
    assert np.array_equal(b(img, BOXES)[0], ra[0][0])


def test_build_transform_from_config():
    cfg = get_default_config()
    test_t = build_transform(cfg, is_train=False)
    assert test_t.compose is None  # the model resizes
    img = np.zeros((20, 30, 3), np.uint8)
    assert test_t(img, np.zeros((0, 4), np.float32))[0] is img
    names = lambda t: [type(x).__name__ for x in t.transforms]  # noqa: E731
    assert names(build_transform(cfg, True)) == ["HorizontalFlip"]
    cfg.TRAIN.USE_FLIPPED = False
    cfg.AUG.COLOR_JITTER = True
    cfg.AUG.RANDOM_CROP = True
    assert names(build_transform(cfg, True)) == ["BBoxSafeRandomCrop", "ColorJitter"]
    cfg.AUG.RANDOM_CROP_MODE = "area"
    t = build_transform(cfg, True)
    assert names(t) == ["RandomAreaCrop", "ColorJitter"]
    with pytest.raises(ValueError, match="crop mode"):
        make_detection_transform(crop="zoom")
