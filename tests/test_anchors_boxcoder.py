"""Anchors (vs py-faster-rcnn), box coder, matcher and balanced sampler."""
import math

import numpy as np
import pytest
import torch

from detection.modeling.anchors import AnchorGenerator, generate_base_anchors
from detection.modeling.box_coder import BoxCoder, box_sides_at_least, clip_boxes
from detection.modeling.sampling import BalancedSampler, Matcher, rank_in_group
from detection.ops import box_iou

# py-faster-rcnn's generate_anchors() output for base 16, ratios (0.5, 1, 2), scales (8, 16, 32), in its
# inclusive pixel convention (width = x2 - x1 + 1); ours is continuous (width = x2 - x1): theirs + [0, 0, 1, 1].
PY_FASTER_RCNN_ANCHORS = [
    [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359],
]


def _pyfrcnn_generate_anchors(base_size, ratios, scales):
    """py-faster-rcnn lib/rpn/generate_anchors.py, verbatim in numpy (inclusive pixel coordinates)."""
    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mk(ws, hs, xc, yc):
        ws, hs = ws[:, None], hs[:, None]
        return np.hstack((xc - 0.5 * (ws - 1), yc - 0.5 * (hs - 1), xc + 0.5 * (ws - 1), yc + 0.5 * (hs - 1)))

    def ratio_enum(a, ratios):
        w, h, xc, yc = whctrs(a)
        ws = np.round(np.sqrt(w * h / ratios))
        return mk(ws, np.round(ws * ratios), xc, yc)

    def scale_enum(a, scales):
        w, h, xc, yc = whctrs(a)
        return mk(w * scales, h * scales, xc, yc)

    base = np.array([1, 1, base_size, base_size]) - 1
    r = ratio_enum(base, np.array(ratios, dtype=np.float64))
    return np.vstack([scale_enum(r[i], np.array(scales, dtype=np.float64)) for i in range(r.shape[0])])


def test_base_anchors_match_py_faster_rcnn():
    ours = generate_base_anchors(16, (0.5, 1, 2), (8, 16, 32))
    expected = torch.tensor(PY_FASTER_RCNN_ANCHORS, dtype=torch.float64) + torch.tensor([0, 0, 1, 1.0])
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    # every anchor is centred on the continuous centre (8, 8) of the first 16x16 cell
    torch.testing.assert_close((ours[:, :2] + ours[:, 2:]) / 2, torch.full((9, 2), 8.0, dtype=torch.float64))


@pytest.mark.parametrize("base,ratios,scales", [(16, (0.5, 1, 2), (2, 4, 8)), (8, (0.25, 1, 3), (1, 5)),
                                                (32, (1.0,), (4,))])
def test_base_anchors_match_reference_algorithm(base, ratios, scales):
    ref = torch.from_numpy(_pyfrcnn_generate_anchors(base, ratios, scales)) + torch.tensor([0, 0, 1, 1.0])
    torch.testing.assert_close(generate_base_anchors(base, ratios, scales), ref, rtol=0, atol=1e-9)


def test_grid_anchors_order_and_cache():
    gen = AnchorGenerator(stride=16)
    feat = torch.zeros(2, 8, 3, 5)
    anchors = gen(feat)
    assert anchors.shape == (3 * 5 * 9, 4) and anchors.dtype == torch.float32
    grid = anchors.view(3, 5, 9, 4)
    base = gen.base_anchors.float()
    torch.testing.assert_close(grid[0, 0], base)
    torch.testing.assert_close(grid[2, 4], base + torch.tensor([64.0, 32.0, 64.0, 32.0]))  # x = 4*16, y = 2*16
    assert gen(feat) is anchors  # cached per (H, W, device, dtype)
    assert gen(feat.double()).dtype == torch.float64


def test_box_coder_round_trip_and_normalisation():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    ref = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 80], 1)
    xy = torch.rand(50, 2, generator=g) * 100
    gt = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 80], 1)
    for coder in (BoxCoder(), BoxCoder((0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)),
                  BoxCoder((0.1, -0.2, 0.05, 0.0), (0.1, 0.2, 0.3, 0.4))):
        torch.testing.assert_close(coder.decode(coder.encode(gt, ref), ref), gt, rtol=1e-5, atol=1e-3)
    plain, norm = BoxCoder().encode(gt, ref), BoxCoder(stds=(0.1, 0.1, 0.2, 0.2)).encode(gt, ref)
    torch.testing.assert_close(norm, plain * torch.tensor([10.0, 10, 5, 5]))  # torchvision weights 10,10,5,5
    # continuous convention: a unit shift of the centre by one box width
    t = BoxCoder().encode(torch.tensor([[10.0, 0, 20, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    torch.testing.assert_close(t, torch.tensor([[1.0, 0, 0, 0]]))


def test_box_coder_clamps_scale_and_broadcasts():
    coder = BoxCoder()
    ref = torch.tensor([[0.0, 0, 16, 16]])
    out = coder.decode(torch.tensor([[0.0, 0, 100.0, 100.0]]), ref)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0), rtol=1e-4, atol=0)
    deltas = torch.randn(4, 3, 4)  # class-specific deltas [R, C, 4] against [R, 1, 4] rois
    assert coder.decode(deltas, ref.expand(4, 4)[:, None, :]).shape == (4, 3, 4)


def test_clip_and_min_size():
    boxes = torch.tensor([[[-5.0, -5, 50, 50], [10, 10, 300, 300]], [[-5.0, -5, 50, 50], [10, 10, 300, 300]]])
    clipped = clip_boxes(boxes, torch.tensor([[100, 200], [40, 30]]))
    torch.testing.assert_close(clipped[0], torch.tensor([[0.0, 0, 50, 50], [10, 10, 200, 100]]))
    torch.testing.assert_close(clipped[1], torch.tensor([[0.0, 0, 30, 40], [10, 10, 30, 40]]))
    mask = box_sides_at_least(clipped, torch.tensor([[16.0], [25.0]]))
    assert mask.tolist() == [[True, True], [True, False]]


def test_batched_iou_matches_torchvision_per_image():
    import torchvision

    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 7, 2, generator=g) * 50
    a = torch.cat([a, a + 5 + torch.rand(3, 7, 2, generator=g) * 40], -1)
    b = torch.rand(3, 11, 2, generator=g) * 50
    b = torch.cat([b, b + 5 + torch.rand(3, 11, 2, generator=g) * 40], -1)
    out = box_iou(a, b)  # leading batch dimension: image by image
    assert out.shape == (3, 7, 11)
    for i in range(3):
        torch.testing.assert_close(out[i], torchvision.ops.box_iou(a[i], b[i]), rtol=0, atol=0)


def test_matcher_rules():
    # one image, two gts; predictions: high IoU, middle, low, best-of-gt-1 below threshold, invalid
    iou = torch.tensor([[[0.8, 0.5, 0.1, 0.0, 0.9],
                         [0.0, 0.0, 0.0, 0.4, 0.0]]])
    valid_pred = torch.tensor([[True, True, True, True, False]])
    m = Matcher(0.7, 0.3, 0.0, allow_low_quality_matches=True)
    matched, labels = m(iou, torch.tensor([[True, True]]), valid_pred)
    assert labels.tolist() == [[1, -1, 0, 1, -1]]
    assert matched[0, :4].tolist() == [0, 0, 0, 1]
    _, labels = Matcher(0.5, 0.5, 0.1)(iou, torch.tensor([[True, True]]), valid_pred)
    assert labels.tolist() == [[1, 1, 0, 0, -1]]
    _, labels = Matcher(0.5, 0.5, 0.1)(iou, torch.tensor([[False, False]]), valid_pred)  # no gt -> all bg
    assert labels.tolist() == [[0, 0, 0, 0, -1]]


def test_sampler_proportions_and_randomness():
    b, n = 4, 5000
    g = torch.Generator().manual_seed(0)
    labels = torch.full((b, n), -1, dtype=torch.int8)
    labels[:, :3000] = 0
    labels[0, 3000:3500] = 1  # plenty of fg
    labels[1, 3000:3010] = 1  # few fg: the rest is bg
    labels[2, :] = -1
    labels[2, :20] = 0  # few bg, no fg
    labels[3, :] = 1  # fg only
    fg, bg = BalancedSampler(256, 0.5)(labels, generator=g)
    assert (fg & bg).sum() == 0
    assert (fg <= (labels == 1)).all() and (bg <= (labels == 0)).all()
    assert fg.sum(1).tolist() == [128, 10, 0, 128]
    assert bg.sum(1).tolist() == [128, 246, 20, 0]
    fg2, _ = BalancedSampler(256, 0.5)(labels, generator=g)
    assert not torch.equal(fg[0], fg2[0])  # a fresh random subset each call
    counts = torch.zeros(n)
    for _ in range(50):  # uniform over the candidates
        counts += BalancedSampler(256, 0.5)(labels, generator=g)[1][0].float()
    assert counts[3000:].sum() == 0 and counts.sum() == 50 * 128
    halves = counts[:1500].sum(), counts[1500:3000].sum()  # no positional bias
    assert abs(halves[0] - halves[1]) < 0.1 * counts.sum()


def test_rank_in_group():
    groups = torch.tensor([1, 0, 1, 1, 2, 0])
    assert rank_in_group(groups).tolist() == [0, 0, 1, 2, 0, 1]
    assert rank_in_group(torch.zeros(0, dtype=torch.int64)).numel() == 0


def test_scale_clamp_value():
    assert BoxCoder().scale_clamp == pytest.approx(math.log(1000 / 16))
