"""The compiled CPU ops (detection.ops: nms, batched_nms, roi_align, roi_pool).

Checked against torchvision.ops (forward and backward), against slow float64 reference implementations written
here from the definitions, with gradcheck, and for clear errors on bad input. Inputs are small and seeded.
CUDA-vs-CPU checks live in test_ops_cuda.py; torchvision compatibility (float16, box_iou upcasting, fake kernels,
TorchScript, torch.fx, exceptions, quantized tensors) in test_ops_torchvision_compat.py; the one-call batched_nms in
test_ops_batched_nms.py; Soft-NMS in test_ops_soft_nms.py.
"""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

from detection import ops

pytestmark = pytest.mark.skipif(ops.BACKEND != "compiled", reason="tests the compiled ops (DETECTION_OPS is set)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = [torch.float32, torch.float64]


# --------------------------------------------------------------------------------------------------- helpers
def random_boxes(n, size=100.0, max_wh=40.0, seed=0, dtype=torch.float32):
    """[n, 4] xyxy boxes inside a size x size image, widths / heights in (1, max_wh)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * (max_wh - 1)
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def clustered_boxes(n, objects=5, seed=0, dtype=torch.float32):
    """[n, 4] boxes jittered around a few objects, so that many overlap (like RPN proposals)."""
    g = torch.Generator().manual_seed(seed)
    ctr = torch.rand(objects, 2, generator=g, dtype=torch.float64) * 200 + 50
    wh = torch.rand(objects, 2, generator=g, dtype=torch.float64) * 80 + 20
    k = torch.randint(0, objects, (n,), generator=g)
    c = ctr[k] + torch.randn(n, 2, generator=g, dtype=torch.float64) * wh[k] * 0.1
    s = wh[k] * torch.exp(torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.1)
    return torch.cat([c - s / 2, c + s / 2], dim=1).to(dtype)


def distinct_scores(n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.randperm(n, generator=g).to(dtype) + 1) / (n + 1)


def iou_matrix(a, b):
    """Pairwise IoU in float64, same formula as the kernels (0/0 -> nan for two empty boxes)."""
    a, b = a.double(), b.double()
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def reference_nms(boxes, scores, thr):
    """Greedy NMS from the definition, in Python float64: scores descending (ties: lower index first)."""
    b = boxes.double().tolist()
    order = sorted(range(len(b)), key=lambda i: -float(scores[i]))
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed = [False] * len(b)
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if suppressed[j]:
                continue
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = w * h
            union = area[i] + area[j] - inter
            iou = inter / union if union != 0 else math.nan
            if iou > thr:
                suppressed[j] = True
    return torch.tensor(keep, dtype=torch.int64)


def reference_roi_align(x, rois, pooled, scale, sampling_ratio, aligned):
    """RoIAlign from its definition (float64 loops over RoIs, bins and samples; vectorised over channels)."""
    x = x.double()
    ph_, pw_ = pooled
    out = torch.zeros(rois.shape[0], x.shape[1], ph_, pw_, dtype=torch.float64)
    H, W = x.shape[2:]

    def sample(plane, y, xx):
        if y < -1 or y > H or xx < -1 or xx > W:
            return torch.zeros(plane.shape[0], dtype=torch.float64)
        y, xx = max(y, 0.0), max(xx, 0.0)
        y0, x0 = int(y), int(xx)
        if y0 >= H - 1:
            y0 = y1 = H - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= W - 1:
            x0 = x1 = W - 1
            xx = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, xx - x0
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * plane[:, y0, x0] + hy * lx * plane[:, y0, x1]
                + ly * hx * plane[:, y1, x0] + ly * lx * plane[:, y1, x1])

    for k, r in enumerate(rois.double().tolist()):
        plane = x[int(r[0])]
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * scale - off for v in r[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_, rw / pw_
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(rh / ph_), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(rw / pw_), 0)
        count = max(gh * gw, 1)
        for i in range(ph_):
            for j in range(pw_):
                acc = torch.zeros(x.shape[1], dtype=torch.float64)
                for iy in range(gh):
                    y = y1 + i * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        acc += sample(plane, y, x1 + j * bw + (ix + 0.5) * bw / gw)
                out[k, :, i, j] = acc / count
    return out


def make_rois(dtype=torch.float32):
    """[K, 5] RoIs over a 2-image batch of ~24 x 32 px images: inside, partly and wholly outside, zero-size,
    inverted, sub-pixel and image-covering."""
    return torch.tensor([
        [0, 2.0, 3.0, 14.0, 11.0],      # inside
        [1, 5.3, 1.7, 20.9, 17.2],      # inside, fractional
        [0, -6.0, -4.0, 8.0, 6.0],      # partly outside (top left)
        [1, 25.0, 18.0, 40.0, 30.0],    # partly outside (bottom right)
        [0, 50.0, 50.0, 60.0, 70.0],    # wholly outside
        [1, -30.0, -30.0, -20.0, -25.0],  # wholly outside (negative)
        [0, 7.0, 7.0, 7.0, 7.0],        # zero size
        [1, 9.0, 4.0, 9.0, 12.0],       # zero width
        [0, 12.0, 10.0, 4.0, 3.0],      # inverted
        [1, 10.2, 10.6, 10.7, 10.9],    # sub-pixel
        [0, 0.0, 0.0, 31.0, 23.0],      # the whole image
    ], dtype=dtype)


def feature_map(b=2, c=3, h=24, w=32, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype)


def distinct_map(b=2, c=3, h=24, w=32, dtype=torch.float64, seed=0):
    """Values all distinct and >= 1 apart (no max-pooling ties, even under gradcheck's perturbations)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(b * c * h * w, generator=g).reshape(b, c, h, w).to(dtype)


def grads_of(fn, x, rois, weight):
    """d/dx of sum(fn(x, rois) * weight)."""
    x = x.detach().clone().requires_grad_()
    (fn(x, rois) * weight).sum().backward()
    return x.grad


# ------------------------------------------------------------------------------------------------------- NMS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 2, 50, 600])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision(n, thr, dtype):
    for boxes in (random_boxes(n, dtype=dtype), clustered_boxes(n, dtype=dtype)):
        scores = distinct_scores(n, dtype=dtype)
        keep = ops.nms(boxes, scores, thr)
        assert keep.dtype == torch.int64 and keep.dim() == 1
        torch.testing.assert_close(keep, torchvision.ops.nms(boxes, scores, thr), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_many_boxes_matches_torchvision(dtype):
    # > 16k candidates: the parallel suppression passes and the compaction of the candidate list both run.
    boxes = torch.cat([clustered_boxes(20000, objects=8, seed=3, dtype=dtype), random_boxes(500, dtype=dtype)])
    scores = distinct_scores(boxes.shape[0], seed=3, dtype=dtype)
    for thr in (0.5, 0.7):
        torch.testing.assert_close(ops.nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("thr", [0.0, 0.25, 0.5, 0.9])
def test_nms_matches_python_reference(thr):
    boxes = torch.cat([random_boxes(150, seed=5, dtype=torch.float64),
                       clustered_boxes(150, seed=6, dtype=torch.float64)])
    scores = torch.round(distinct_scores(300, seed=7, dtype=torch.float64) * 20) / 20  # many ties
    torch.testing.assert_close(ops.nms(boxes, scores, thr), reference_nms(boxes, scores, thr))


def test_nms_threshold_is_strict():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert ops.nms(boxes, scores, 0.4999).tolist() == [0]
    assert ops.nms(boxes.double(), scores.double(), 0.5).tolist() == [0, 1]
    # A float32 IoU just above a double threshold that rounds up to it in float32 still suppresses.
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.7]])
    iou32 = torch.tensor(0.7, dtype=torch.float32).item()  # 0.699999988..., the float32 IoU of b
    assert ops.nms(b, scores, iou32 - 1e-12).tolist() == [0] == torchvision.ops.nms(b, scores, iou32 - 1e-12).tolist()
    assert ops.nms(b, scores, 0.7).tolist() == [0, 1] == torchvision.ops.nms(b, scores, 0.7).tolist()
    # Boxes with NaN IoU (two empty boxes) never suppress each other; a negative threshold suppresses all else.
    e = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]])
    assert ops.nms(e, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1, 2]
    assert ops.nms(b, scores, -0.1).tolist() == [0] == torchvision.ops.nms(b, scores, -0.1).tolist()


@pytest.mark.parametrize("thr", [0.0, 0.5, 0.8])
def test_nms_postconditions_with_ties_repeats_and_empty_boxes(thr):
    g = torch.Generator().manual_seed(11)
    boxes = random_boxes(120, size=60, seed=11, dtype=torch.float64)
    boxes = torch.cat([boxes, boxes[:30], boxes[:10]])                   # exact repeats
    boxes[::9, 2] = boxes[::9, 0]                                        # zero width
    boxes[::13, 3] = boxes[::13, 1]                                      # zero height
    scores = torch.randint(0, 8, (boxes.shape[0],), generator=g).double()  # heavy ties
    keep = ops.nms(boxes, scores, thr)
    kept = torch.zeros(boxes.shape[0], dtype=torch.bool)
    kept[keep] = True
    assert keep.unique().numel() == keep.numel()
    # Sorted by decreasing score, ties by index.
    ks = scores[keep]
    assert bool((ks[:-1] >= ks[1:]).all())
    same = ks[:-1] == ks[1:]
    assert bool((keep[:-1][same] < keep[1:][same]).all())
    iou = iou_matrix(boxes, boxes)
    # No kept pair overlaps more than thr.
    kk = iou[keep][:, keep]
    kk.fill_diagonal_(0)
    assert not bool((kk > thr).any())
    # Every dropped box overlaps a kept box of higher or equal score by more than thr.
    for j in torch.nonzero(~kept).flatten().tolist():
        cover = (iou[keep, j] > thr) & (scores[keep] >= scores[j])
        assert bool(cover.any()), j
    torch.testing.assert_close(keep, reference_nms(boxes, scores, thr))


def test_nms_non_contiguous_inputs():
    boxes = random_boxes(200, seed=2)
    scores = distinct_scores(200, seed=2)
    wide = torch.zeros(200, 8)
    wide[:, ::2] = boxes
    score_view = torch.stack([scores, scores], 1)[:, 1]
    assert not wide[:, ::2].is_contiguous() and not score_view.is_contiguous()
    torch.testing.assert_close(ops.nms(wide[:, ::2], score_view, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def per_group_nms(boxes, scores, idxs, thr):
    """The definition of batched NMS: torchvision.ops.nms on each category alone, merged by decreasing score."""
    keep = []
    for g in torch.unique(idxs).tolist():
        sel = torch.nonzero(idxs == g).flatten()
        keep.append(sel[torchvision.ops.nms(boxes[sel], scores[sel], thr)])
    keep = torch.cat(keep)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_equals_per_group_nms(dtype):
    g = torch.Generator().manual_seed(4)
    boxes = clustered_boxes(400, seed=4, dtype=dtype)
    scores = distinct_scores(400, seed=4, dtype=dtype)
    for groups in (1, 3, 5, 9):  # one call; one call for up to four groups; several calls
        idxs = torch.randint(0, groups, (400,), generator=g) * 7  # sparse ids
        for thr in (0.0, 0.3, 0.7):
            assert torch.equal(ops.batched_nms(boxes, scores, idxs, thr), per_group_nms(boxes, scores, idxs, thr))
    shifted = boxes - 150  # negative coordinates (no mirroring): one call per group
    assert torch.equal(ops.batched_nms(shifted, scores, idxs, 0.5), per_group_nms(shifted, scores, idxs, 0.5))
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, -0.1), per_group_nms(boxes, scores, idxs, -0.1))
    empty = ops.batched_nms(boxes[:0], scores[:0], idxs[:0], 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def test_batched_nms_is_exact_at_16_images_x_81_classes_of_1333_pixel_boxes():
    """idxs = image * 81 + class over 1296 groups: a coordinate offset of ~1.7e6 rounds float32 boxes to 0.125 px
    and changes the kept set; batched_nms must stay exactly per-group NMS."""
    g = torch.Generator().manual_seed(15)
    groups, per_group = 16 * 81, 8
    ctr = torch.rand(groups, 1, 2, generator=g, dtype=torch.float64) * 1000 + 160
    wh = torch.rand(groups, 1, 2, generator=g, dtype=torch.float64) * 300 + 20
    c = ctr + torch.randn(groups, per_group, 2, generator=g, dtype=torch.float64) * wh * 0.12
    s = wh * torch.exp(torch.randn(groups, per_group, 2, generator=g, dtype=torch.float64) * 0.12)
    boxes = torch.cat([c - s / 2, c + s / 2], -1).clamp(0, 1333).reshape(-1, 4).float()
    idxs = torch.arange(groups).repeat_interleave(per_group)
    perm = torch.randperm(idxs.numel(), generator=g)
    boxes, idxs = boxes[perm], idxs[perm]
    scores = distinct_scores(idxs.numel(), seed=15)
    reference = per_group_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), reference)
    offset = idxs.to(boxes) * (boxes.max() + 1)  # the coordinate trick this replaces: shown to go wrong here
    assert offset.max() > 1.7e6 and not torch.equal(torchvision.ops.nms(boxes + offset[:, None], scores, 0.5),
                                                    reference)


@pytest.mark.parametrize("make_args, match", [
    (lambda: (torch.rand(5, 5), torch.rand(5)), "\\[N, 4\\]"),
    (lambda: (torch.rand(2, 5, 4), torch.rand(5)), "\\[N, 4\\]"),
    (lambda: (torch.rand(5, 4), torch.rand(5, 1)), "1-D"),
    (lambda: (torch.rand(5, 4), torch.rand(4)), "same length"),
    (lambda: (torch.rand(5, 4), torch.rand(5).double()), "same dtype"),
    (lambda: (torch.randint(0, 9, (5, 4)), torch.randint(0, 9, (5,))), "float16, bfloat16, float32 or float64"),
])
def test_nms_bad_inputs_raise(make_args, match):
    boxes, scores = make_args()
    with pytest.raises(RuntimeError, match=match):
        ops.nms(boxes, scores, 0.5)


# -------------------------------------------------------------------------------------------------- RoIAlign
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_roi_align_matches_torchvision(scale, sampling_ratio, aligned, dtype):
    x = feature_map(dtype=dtype)
    rois = make_rois(dtype) / torch.tensor([1, scale, scale, scale, scale], dtype=dtype)  # same map coverage
    args = ((5, 4), scale, sampling_ratio, aligned)
    out = ops.roi_align(x, rois, *args)
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, *args))
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    torch.testing.assert_close(grads_of(lambda t, r: ops.roi_align(t, r, *args), x, rois, w),
                               grads_of(lambda t, r: torchvision.ops.roi_align(t, r, *args), x, rois, w))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 3])
def test_roi_align_matches_python_reference(sampling_ratio, aligned):
    x = feature_map(c=2, h=10, w=13, dtype=torch.float64, seed=3)
    rois = make_rois(torch.float64) * 0.5
    out = ops.roi_align(x, rois, (3, 2), 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(out, reference_roi_align(x, rois, (3, 2), 1.0, sampling_ratio, aligned))


@pytest.mark.parametrize("channels", [1, 64, 70])
def test_roi_align_channel_chunks_and_layouts(channels):
    # Channel counts around the kernels' 64-channel chunks; channels-last and sliced (non-contiguous) inputs.
    x = feature_map(c=channels, h=12, w=9, seed=channels)
    rois = make_rois() * 0.4
    expected = torchvision.ops.roi_align(x, rois, 3, 0.5, 2, True)
    torch.testing.assert_close(ops.roi_align(x, rois, 3, 0.5, 2, True), expected)
    nhwc = ops.roi_align(x.contiguous(memory_format=torch.channels_last), rois, 3, 0.5, 2, True)
    torch.testing.assert_close(nhwc, expected)
    if ops.BACKEND == "compiled" and channels > 1:  # the CPU kernel keeps the map's layout (the fast path's heads)
        assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
        assert torch.equal(nhwc, ops.roi_align(x, rois, 3, 0.5, 2, True))
    xl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w0 = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    (ops.roi_align(xl, rois, 3, 0.5, 2, True) * w0).sum().backward()
    torch.testing.assert_close(xl.grad, grads_of(lambda t, r: torchvision.ops.roi_align(t, r, 3, 0.5, 2, True),
                                                 x, rois, w0))
    wide = torch.zeros(2, channels, 12, 18)
    wide[..., ::2] = x
    rois_view = torch.cat([rois, rois], 1)[:, :5]
    assert not wide[..., ::2].is_contiguous() and not rois_view.is_contiguous()
    torch.testing.assert_close(ops.roi_align(wide[..., ::2], rois_view, 3, 0.5, 2, True), expected)
    w = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        grads_of(lambda t, r: ops.roi_align(t, r, 3, 0.5, 2, True), wide[..., ::2], rois_view, w),
        grads_of(lambda t, r: torchvision.ops.roi_align(t, r, 3, 0.5, 2, True), x, rois, w))


def test_roi_align_list_of_boxes_and_module():
    x = feature_map()
    rois = make_rois()
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    expected = ops.roi_align(x, torch.cat([rois[rois[:, 0] == i] for i in range(2)]), 4, 0.5, 0, True)
    torch.testing.assert_close(ops.roi_align(x, boxes, 4, 0.5, 0, True), expected)
    torch.testing.assert_close(torchvision.ops.roi_align(x, boxes, 4, 0.5, 0, True), expected)
    m = ops.RoIAlign((4, 4), spatial_scale=0.5, sampling_ratio=0, aligned=True)
    torch.testing.assert_close(m(x, boxes), expected)
    assert "sampling_ratio=0" in repr(m)


def test_roi_ops_on_empty_feature_maps():
    for shape in ((1, 3, 0, 5), (1, 3, 4, 0)):
        x = torch.zeros(shape, requires_grad=True)
        r = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
        for out in (ops.roi_align(x, r, 2, 1.0, -1, True), ops.roi_pool(x, r, 2)):
            assert out.shape == (1, 3, 2, 2) and not out.any()
            out.sum().backward()
            assert x.grad.shape == shape


def test_roi_align_empty_rois_and_unused_images():
    x = feature_map().requires_grad_()
    out = ops.roi_align(x, torch.zeros(0, 5), 7, 1.0, 2, True)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    x.grad = None
    ops.roi_align(x, torch.tensor([[1, 0.0, 0.0, 9.0, 9.0]]), 2, 1.0, 2, True).sum().backward()
    assert torch.equal(x.grad[0], torch.zeros_like(x[0])) and x.grad[1].abs().sum() > 0


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_gradcheck(sampling_ratio, aligned):
    x = feature_map(b=2, c=2, h=6, w=7, dtype=torch.float64, seed=8).requires_grad_()
    rois = torch.tensor([[0, 0.5, 0.7, 4.6, 5.1], [1, -1.0, 1.0, 3.3, 8.0], [0, 2.0, 2.0, 2.4, 2.2]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, rois, (3, 2), 1.0, sampling_ratio, aligned), (x,))


# --------------------------------------------------------------------------------------------------- RoIPool
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("pooled", [(5, 4), (1, 1)])
def test_roi_pool_matches_torchvision(pooled, scale, dtype):
    x = feature_map(dtype=dtype)
    rois = make_rois(dtype) / torch.tensor([1, scale, scale, scale, scale], dtype=dtype)
    out = ops.roi_pool(x, rois, pooled, scale)
    torch.testing.assert_close(out, torchvision.ops.roi_pool(x, rois, pooled, scale), rtol=0, atol=0)
    out_c, argmax = torch.ops.detection.roi_pool(x, rois, scale, *pooled)
    _, argmax_tv = torch.ops.torchvision.roi_pool(x, rois, scale, *pooled)
    assert argmax.dtype == torch.int32 and torch.equal(argmax, argmax_tv)
    assert bool((out_c[argmax == -1] == 0).all())
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    torch.testing.assert_close(grads_of(lambda t, r: ops.roi_pool(t, r, pooled, scale), x, rois, w),
                               grads_of(lambda t, r: torchvision.ops.roi_pool(t, r, pooled, scale), x, rois, w))


def test_roi_pool_empty_bins_and_layouts():
    x = feature_map(c=70, h=12, w=9)
    rois = torch.tensor([[0, 100.0, 100.0, 120.0, 130.0], [1, 1.0, 1.0, 6.0, 8.0]])
    out, argmax = torch.ops.detection.roi_pool(x.contiguous(memory_format=torch.channels_last), rois, 1.0, 3, 3)
    assert torch.equal(out[0], torch.zeros_like(out[0])) and bool((argmax[0] == -1).all())
    assert bool((argmax[1] >= 0).all())
    torch.testing.assert_close(out, torchvision.ops.roi_pool(x, rois, 3, 1.0))
    # Values at or below -FLT_MAX are never picked (torchvision's rule): 0 gradient, argmax -1.
    y = torch.full((1, 1, 4, 4), -math.inf)
    out, argmax = torch.ops.detection.roi_pool(y, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), 1.0, 2, 2)
    assert bool((argmax == -1).all()) and bool((out == -torch.finfo(torch.float32).max).all())
    assert ops.roi_pool(x, torch.zeros(0, 5), 3).shape == (0, 70, 3, 3)
    m = ops.RoIPool(3, 1.0)
    torch.testing.assert_close(m(x, rois), torchvision.ops.roi_pool(x, rois, 3, 1.0))


def test_roi_pool_gradcheck():
    x = distinct_map(b=2, c=2, h=6, w=7).requires_grad_()
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 5.0], [1, 1.0, 2.0, 6.0, 5.0], [0, 2.0, 2.0, 2.0, 2.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ops.roi_pool(t, rois, (2, 3), 1.0), (x,))


# ----------------------------------------------------------------------------------------------- bad inputs
X = torch.zeros(2, 3, 8, 8)
R = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("input, rois, exc", [
    (X[0], R, ValueError),                  # 3-D input
    (X, R[:, 1:], ValueError),               # rois [K, 4] tensor
    (X, R.double(), TypeError),              # dtype mismatch
    (X, [R[:, 1:4]], ValueError),            # list entry not [L, 4]
    (X, "boxes", TypeError),
])
def test_roi_ops_python_checks(op, input, rois, exc):
    with pytest.raises(exc):
        getattr(ops, op)(input, rois, 2)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("input, rois, extra, match", [
    (X[0], R, {}, "4-D"),
    (X, R[:, 1:], {}, "\\[K, 5\\]"),
    (X, R[0], {}, "\\[K, 5\\]"),
    (X, R.double(), {}, "same dtype"),
    (X.int(), R.int(), {}, "float16, bfloat16, float32 or float64"),
    (X, R, {"pooled": (0, 2)}, "positive"),
    (X, R, {"pooled": (2, -1)}, "positive"),
    (X, R, {"scale": -1.0}, "spatial_scale"),
    (X, R, {"scale": math.nan}, "spatial_scale"),
    (X, torch.tensor([[2, 1.0, 1.0, 5.0, 5.0]]), {}, "batch index"),
    (X, torch.tensor([[-1, 1.0, 1.0, 5.0, 5.0]]), {}, "batch index"),
    (X, torch.tensor([[math.nan, 1.0, 1.0, 5.0, 5.0]]), {}, "batch index"),
])
def test_roi_ops_kernel_checks(op, input, rois, extra, match):
    ph, pw = extra.get("pooled", (2, 2))
    scale = extra.get("scale", 1.0)
    args = (scale, ph, pw, 2, True) if op == "roi_align" else (scale, ph, pw)
    with pytest.raises(RuntimeError, match=match):
        getattr(torch.ops.detection, op)(input, rois, *args)


def test_roi_align_refuses_absurd_sampling():
    with pytest.raises(RuntimeError, match="too many"):
        torch.ops.detection.roi_align(X, R, 1.0, 7, 7, 2 ** 40, True)
    # NaN coordinates give zeros rather than undefined behaviour.
    out = torch.ops.detection.roi_align(X + 1, torch.tensor([[0, math.nan, 1.0, 5.0, 5.0]]), 1.0, 2, 2, 2, True)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("roi", [[0, 0, 0, math.inf, 5], [0, -1e30, 0, 1e30, 1e30]])
def test_roi_align_refuses_unbounded_adaptive_grid(roi):
    # The bound the CUDA kernel shares (csrc/common/op_checks.h): an infinite or huge RoI would loop for hours.
    with pytest.raises(RuntimeError, match=r"roi_align: RoI 0 needs \d+ x 2147483648 samples per bin, too many"):
        torch.ops.detection.roi_align(X, torch.tensor([roi]), 1.0, 7, 7, -1, True)


def test_check_async_errors_without_cuda_is_a_no_op():
    # CUDA kernels record data errors for later (csrc/cuda/async_error.cuh); without CUDA use there is none.
    assert ops.check_async_errors() is None
    assert torch.ops.detection._check_async_errors() is None


def test_backward_kernel_checks():
    g = torch.zeros(1, 3, 2, 2)
    with pytest.raises(RuntimeError, match="grad must be"):
        torch.ops.detection._roi_align_backward(g[:, :2], R, 1.0, 2, 2, 2, 3, 8, 8, 2, True)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.detection._roi_align_backward(g.double(), R, 1.0, 2, 2, 2, 3, 8, 8, 2, True)
    with pytest.raises(RuntimeError, match="non-negative"):
        torch.ops.detection._roi_align_backward(g, R, 1.0, 2, 2, 2, 3, -8, 8, 2, True)
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="int32"):
        torch.ops.detection._roi_pool_backward(g, R, argmax.long(), 1.0, 2, 2, 2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.detection._roi_pool_backward(g + 1, R, argmax + 64, 1.0, 2, 2, 2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="argmax shape"):
        torch.ops.detection._roi_pool_backward(g, R, argmax[:, :2], 1.0, 2, 2, 2, 3, 8, 8)


# ------------------------------------------------------------------------------------- backend switch, hints
def test_backend_switch_and_import_hint():
    """One subprocess: DETECTION_OPS=torchvision, an invalid DETECTION_OPS, and an unbuilt detection._C."""
    script = textwrap.dedent("""
        import importlib, os, sys
        import torch, torchvision

        def fresh_ops(env):
            for name in [m for m in sys.modules if m.startswith("detection.ops")]:
                del sys.modules[name]
            os.environ.pop("DETECTION_OPS", None)
            os.environ.update(env)
            return importlib.import_module("detection.ops")

        ops = fresh_ops({"DETECTION_OPS": "torchvision"})
        assert ops.BACKEND == "torchvision"
        assert "detection._C" not in sys.modules
        b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]); s = torch.tensor([0.9, 0.8, 0.7])
        assert ops.nms(b, s, 0.5).tolist() == [0, 2]
        x = torch.randn(1, 2, 8, 8); r = torch.tensor([[0, 1.0, 1, 6, 6]])
        assert torch.equal(ops.roi_align(x, r, 2, 1.0, 2, True), torchvision.ops.roi_align(x, r, 2, 1.0, 2, True))
        assert torch.equal(ops.roi_pool(x, r, 2), torchvision.ops.roi_pool(x, r, 2))

        try:
            fresh_ops({"DETECTION_OPS": "bogus"})
            raise SystemExit("no error for DETECTION_OPS=bogus")
        except ImportError as exc:
            assert "bogus" in str(exc)

        class Block:  # make `from detection import _C` fail as on an unbuilt tree
            def find_spec(self, name, path=None, target=None):
                if name == "detection._C":
                    raise ImportError("No module named 'detection._C'")
        sys.meta_path.insert(0, Block())
        try:
            fresh_ops({})
            raise SystemExit("no error without detection._C")
        except ImportError as exc:
            msg = str(exc)
            assert "make setup" in msg and "DETECTION_OPS=torchvision" in msg, msg
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != "DETECTION_OPS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_ops_under_autocast_compute_in_float_and_return_the_feature_dtype(op):
    """Mixed precision: bfloat16 features with float32 boxes inside autocast, as torchvision allows."""
    import detection.ops as ours

    torch.manual_seed(0)
    x = torch.rand(1, 4, 12, 12)
    boxes = torch.tensor([[0.0, 1.0, 1.5, 9.0, 10.0], [0.0, 0.0, 0.0, 5.0, 7.0]])
    fn = getattr(ours, op)
    kwargs = dict(spatial_scale=1.0) if op == "roi_pool" else dict(spatial_scale=1.0, sampling_ratio=2)
    reference = fn(x.bfloat16().float(), boxes, 3, **kwargs)
    half = x.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(half, boxes, 3, **kwargs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.bfloat16().float())
    out.float().sum().backward()
    assert half.grad is not None and half.grad.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="dtype"):  # outside autocast a mismatch stays an error
        fn(x.bfloat16(), boxes, 3, **kwargs)


def test_nms_under_autocast_accepts_half_scores():
    import detection.ops as ours

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keep = ours.nms(boxes, scores.bfloat16(), 0.5)
    assert keep.tolist() == [0, 2]
