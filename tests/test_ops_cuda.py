"""CUDA kernels of detection._C (csrc/cuda) against our CPU kernels and torchvision's CUDA ops.

Needs a CUDA device and an extension built with its CUDA sources (FORCE_CUDA=1, or a GPU at build time);
without a device the whole module is skipped (marker `cuda`: `pytest -m cuda` runs it with the other CUDA tests).
Boxes are xyxy in image coordinates; RoIs are [K, 5] rows (batch_index, x1, y1, x2, y2).
"""
import math
import re
import time

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

import torchvision  # noqa: E402

from detection import ops  # noqa: E402

_C = torch.ops.detection
CUDA = "cuda"
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}


@pytest.fixture(scope="module", autouse=True)
def _compiled_with_cuda():
    if ops.BACKEND != "compiled":
        pytest.skip(f"DETECTION_OPS={ops.BACKEND}: the compiled ops are not in use")
    for name in ("nms", "batched_nms", "soft_nms", "roi_align", "_roi_align_backward", "roi_pool",
                 "_roi_pool_backward"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"detection::{name}", "CUDA"):
            pytest.fail(f"detection._C has no CUDA kernel for {name}: rebuild with FORCE_CUDA=1 `make setup` "
                        "(or `FORCE_CUDA=1 pip install --no-build-isolation -e .`)")


@pytest.fixture(autouse=True)
def _no_async_error_left():
    """Every test starts and must end without a data error recorded by a CUDA kernel (csrc/cuda/async_error.cuh)."""
    try:
        ops.check_async_errors()
    except RuntimeError:
        pass
    yield
    ops.check_async_errors()


# ----------------------------------------------------------------------------------------------------------------
# inputs


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def random_boxes(n, dtype=torch.float32, seed=0, size=100.0):
    """[n, 4] xyxy boxes: half scattered at random, half jittered copies of them (so that many overlap)."""
    g = _gen(seed)
    m = (n + 1) // 2
    xy = torch.rand(m, 2, dtype=torch.float64, generator=g) * size
    wh = torch.rand(m, 2, dtype=torch.float64, generator=g) * size / 4 + 0.5
    base = torch.cat([xy, xy + wh], 1)
    jitter = base[torch.randint(0, max(m, 1), (n - m,), generator=g)] + torch.randn(n - m, 4, dtype=torch.float64,
                                                                                       generator=g) * 2
    jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2] + 0.1)
    return torch.cat([base, jitter])[:n].to(dtype)


def distinct_scores(n, dtype=torch.float32, seed=1):
    """[n] scores, all different (ties could be ordered differently by torchvision's unstable sort)."""
    return (torch.randperm(n, generator=_gen(seed)).to(torch.float64) / max(n, 1)).to(dtype)


def feature_map(dtype=torch.float32, seed=2, shape=(2, 3, 10, 12)):
    return torch.rand(*shape, dtype=torch.float64, generator=_gen(seed)).to(dtype)


def tricky_rois(dtype=torch.float32, scale=1.0):
    """RoIs for a [2, C, 10, 12] map at spatial_scale `scale`: inside, partly and fully outside, degenerate."""
    s = 1.0 / scale
    rows = [
        [0, 0, 0, 11, 9],  # the whole map
        [1, 2.3, 1.7, 7.9, 6.2],
        [0, -4, -3, 3, 2],  # partly outside, top-left
        [1, 8, 6, 20, 15],  # partly outside, bottom-right
        [0, 30, 30, 40, 40],  # fully outside
        [1, -10, -10, -2, -3],  # fully outside, negative
        [1, 5, 5, 5, 5],  # a point
        [0, 6, 4, 3, 2],  # x2 < x1, y2 < y1
        [1, 0.2, 0.1, 1.1, 0.9],  # smaller than a cell
        [0, -0.6, -0.9, 11.7, 10.4],  # just beyond every border
    ]
    rois = torch.tensor(rows, dtype=torch.float64)
    rois[:, 1:] *= s
    return rois.to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# nms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 129, 1000, 5000])
def test_nms_matches_cpu_and_torchvision(n, threshold, dtype):
    boxes, scores = random_boxes(n, dtype, seed=n), distinct_scores(n, dtype, seed=n + 1)
    keep_cpu = ops.nms(boxes, scores, threshold)
    keep = ops.nms(boxes.to(CUDA), scores.to(CUDA), threshold)
    assert keep.device.type == CUDA and keep.dtype == torch.int64 and keep.dim() == 1
    torch.testing.assert_close(keep.cpu(), keep_cpu, rtol=0, atol=0)
    torch.testing.assert_close(keep_cpu, torchvision.ops.nms(boxes, scores, threshold), rtol=0, atol=0)
    # torchvision's CUDA kernel compares the IoU with float32(threshold), its CPU kernel (and ours, on both devices)
    # with the double threshold; they can only disagree when float32(threshold) != threshold.
    if float(torch.tensor(threshold, dtype=torch.float32)) == threshold or dtype == torch.float32:
        keep_tv = torchvision.ops.nms(boxes.to(CUDA), scores.to(CUDA), threshold)
        torch.testing.assert_close(keep, keep_tv, rtol=0, atol=0)
    # kept indices in decreasing score order
    assert torch.all(scores[keep_cpu][1:] < scores[keep_cpu][:-1])


@pytest.mark.parametrize("n", [20000, 70000])
def test_nms_many_boxes(n):
    boxes, scores = random_boxes(n, torch.float32, seed=3, size=1000.0), distinct_scores(n, seed=4)
    keep = ops.nms(boxes.to(CUDA), scores.to(CUDA), 0.5)
    torch.testing.assert_close(keep.cpu(), ops.nms(boxes, scores, 0.5), rtol=0, atol=0)
    if n <= 20000:
        torch.testing.assert_close(keep, torchvision.ops.nms(boxes.to(CUDA), scores.to(CUDA), 0.5), rtol=0, atol=0)


def test_nms_one_cluster_keeps_one():
    # 3000 near-identical boxes: the top-scoring one suppresses all others, across many 64-box blocks.
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]]).repeat(3000, 1) + torch.rand(3000, 4, generator=_gen(5)) * 0.1
    scores = distinct_scores(3000, seed=6)
    keep = ops.nms(boxes.to(CUDA), scores.to(CUDA), 0.5)
    assert keep.tolist() == [int(scores.argmax())]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_threshold_edges(dtype):
    def run(boxes, scores, thr):
        b = torch.tensor(boxes, dtype=dtype)
        s = torch.tensor(scores, dtype=dtype)
        got = ops.nms(b.to(CUDA), s.to(CUDA), thr).cpu()
        torch.testing.assert_close(got, ops.nms(b, s, thr), rtol=0, atol=0)
        torch.testing.assert_close(got, torchvision.ops.nms(b, s, thr), rtol=0, atol=0)  # torchvision's CPU rule
        return got.tolist()

    same = [[0, 0, 10, 10], [0, 0, 10, 10]]
    assert run(same, [0.4, 0.9], 1.0) == [1, 0]  # IoU 1 is not > 1
    assert run(same, [0.4, 0.9], 0.99) == [1]
    touching = [[0, 0, 1, 1], [1, 0, 2, 1]]
    assert run(touching, [0.9, 0.8], 0.0) == [0, 1]  # IoU 0 is not > 0
    assert run([[0, 0, 1, 1], [0.9, 0, 2, 1]], [0.9, 0.8], 0.0) == [0]
    half = [[0, 0, 2, 1], [0, 0, 1, 1]]  # IoU exactly 0.5
    assert run(half, [0.9, 0.8], 0.5) == [0, 1]
    assert run(half, [0.9, 0.8], 0.49) == [0]
    # IoU 1/3 rounds up in float32, so `iou > 1/3` (compared as torchvision's CPU kernel does) is true there.
    third = [[0, 0, 2, 1], [1, 0, 3, 1]]
    assert run(third, [0.9, 0.8], 1.0 / 3.0) == ([0] if dtype == torch.float32 else [0, 1])
    # zero-area boxes: IoU 0/0 is NaN, which never suppresses
    assert run([[5, 5, 5, 5], [5, 5, 5, 5]], [0.9, 0.8], 0.0) == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_nms(dtype):
    n = 1000
    boxes, scores = random_boxes(n, dtype, seed=7), distinct_scores(n, dtype, seed=8)
    idxs = torch.randint(0, 5, (n,), generator=_gen(9))
    keep = ops.batched_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), 0.5)
    torch.testing.assert_close(keep.cpu(), ops.batched_nms(boxes, scores, idxs, 0.5), rtol=0, atol=0)
    keep_tv = torchvision.ops.batched_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), 0.5)
    torch.testing.assert_close(keep, keep_tv, rtol=0, atol=0)
    # boxes of different categories never suppress each other
    same_box = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3, dtype=dtype, device=CUDA)
    got = ops.batched_nms(same_box, torch.tensor([0.9, 0.8, 0.7], dtype=dtype, device=CUDA),
                          torch.tensor([0, 1, 0], device=CUDA), 0.5)
    assert got.tolist() == [0, 1]


def _batched_cases():
    """tests/test_ops_batched_nms.py's adversarial cases (ties, identical boxes, sparse and int32 ids, negative
    coordinates and thresholds, zero-area boxes, the scale case) and sizes around the 64-box blocks."""
    import test_ops_batched_nms as cases

    for name, args in cases.cases():
        yield name, args
    for n, groups in [(63, 2), (64, 3), (65, 1), (129, 7), (3000, 40)]:
        boxes, scores = random_boxes(n, seed=n), distinct_scores(n, seed=n)
        yield f"n={n}", (boxes, scores, torch.randint(0, groups, (n,), generator=_gen(n)), 0.5)


def test_batched_nms_one_kernel_call_matches_cpu_on_the_adversarial_cases():
    for name, (boxes, scores, idxs, thr) in _batched_cases():
        cpu = ops.batched_nms(boxes, scores, idxs, thr)
        got = torch.ops.detection.batched_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), thr)
        assert got.device.type == CUDA
        torch.testing.assert_close(got.cpu(), cpu, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("n, groups", [(30000, 60), (30000, 1), (100000, 2000)])
def test_batched_nms_compact_mask_layout(n, groups):
    # Above 32 MiB of dense mask (N > ~23,000) only each category's words are stored: 100,000 boxes in 2,000
    # categories take ~1 MB instead of 1.25 GB.
    boxes, scores = random_boxes(n, seed=31, size=2000.0), distinct_scores(n, seed=32)
    idxs = torch.randint(0, groups, (n,), generator=_gen(33))
    got = ops.batched_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), 0.5)
    torch.testing.assert_close(got.cpu(), ops.batched_nms(boxes, scores, idxs, 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batched_nms_reduced_precision(dtype):
    boxes = random_boxes(1000, seed=34).to(dtype)
    scores, idxs = distinct_scores(1000, seed=35).to(dtype), torch.randint(0, 4, (1000,), generator=_gen(36))
    got = ops.batched_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), 0.5)
    torch.testing.assert_close(got.cpu(), ops.batched_nms(boxes, scores, idxs, 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_cpu(method):
    # One CUDA block per category; the reference's steps in parallel. Indices exactly, scores to the last bits
    # (exp() in double may differ by an ulp between the CUDA and C libraries before the float rounding).
    import test_ops_soft_nms as soft

    for seed, n, groups in [(0, 150, 1), (1, 600, 7), (2, 2000, 3)]:
        boxes = soft.continuous(soft.grid_boxes(n, seed))
        for scores in (soft.random_scores(n, seed), soft.tied_scores(n, seed)):
            idxs = torch.randint(0, groups, (n,), generator=_gen(seed))
            for thr, sigma, min_score in [(0.3, 0.5, 0.001), (0.5, 0.1, 0.05)]:
                keep, kept = ops.batched_soft_nms(boxes, scores, idxs, method, thr, sigma, min_score)
                got, got_scores = ops.batched_soft_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), method, thr,
                                                       sigma, min_score)
                torch.testing.assert_close(got.cpu(), keep, rtol=0, atol=0)
                torch.testing.assert_close(got_scores.cpu(), kept, rtol=1e-6, atol=1e-9)
                one, one_scores = ops.soft_nms(boxes.to(CUDA), scores.to(CUDA), method, thr, sigma, min_score)
                ref, ref_scores = ops.soft_nms(boxes, scores, method, thr, sigma, min_score)
                torch.testing.assert_close(one.cpu(), ref, rtol=0, atol=0)
                torch.testing.assert_close(one_scores.cpu(), ref_scores, rtol=1e-6, atol=1e-9)


def test_soft_nms_empty_and_reduced_precision():
    keep, kept = ops.soft_nms(torch.zeros(0, 4, device=CUDA), torch.zeros(0, device=CUDA))
    assert keep.shape == (0,) and keep.device.type == CUDA
    boxes, scores = random_boxes(300, seed=37), distinct_scores(300, seed=38)
    keep, kept = ops.soft_nms(boxes.half().to(CUDA), scores.half().to(CUDA), "gaussian")
    ref, ref_scores = ops.soft_nms(boxes.half(), scores.half(), "gaussian")
    assert kept.dtype == torch.float16
    torch.testing.assert_close(keep.cpu(), ref, rtol=0, atol=0)
    torch.testing.assert_close(kept.cpu(), ref_scores, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_reduced_precision(dtype):
    # IoUs are computed in float32 from the (exactly representable) reduced-precision coordinates, and the stable
    # sort orders equal scores alike, so the result is that of float32 NMS on the rounded values.
    n = 1000
    boxes = random_boxes(n, seed=10).to(dtype).to(CUDA)
    scores = distinct_scores(n, seed=11).to(dtype).to(CUDA)
    for threshold in (0.3, 0.5, 0.7):
        expected = ops.nms(boxes.float(), scores.float(), threshold)
        torch.testing.assert_close(ops.nms(boxes, scores, threshold), expected, rtol=0, atol=0)


def test_nms_side_stream():
    boxes, scores = random_boxes(2000, seed=12).to(CUDA), distinct_scores(2000, seed=13).to(CUDA)
    expected = ops.nms(boxes, scores, 0.6)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = ops.nms(boxes, scores, 0.6)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    dev = torch.device("cuda", 1)
    assert torch.cuda.current_device() == 0
    boxes, scores = random_boxes(500, seed=14), distinct_scores(500, seed=15)
    keep = ops.nms(boxes.to(dev), scores.to(dev), 0.5)
    assert keep.device == dev
    torch.testing.assert_close(keep.cpu(), ops.nms(boxes, scores, 0.5), rtol=0, atol=0)
    x, rois = feature_map(), tricky_rois()
    out = ops.roi_align(x.to(dev), rois.to(dev), (3, 3), 1.0, 2, True)
    assert out.device == dev
    torch.testing.assert_close(out.cpu(), ops.roi_align(x, rois, (3, 3), 1.0, 2, True), **TOL[torch.float32])
    out, arg = _C.roi_pool(x.to(dev), rois.to(dev), 1.0, 3, 3)
    assert out.device == dev and arg.device == dev


# ----------------------------------------------------------------------------------------------------------------
# roi_align


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
def test_roi_align_forward_backward(dtype, aligned, sampling_ratio, spatial_scale):
    x, rois = feature_map(dtype), tricky_rois(dtype, spatial_scale)
    args = ((5, 4), spatial_scale, sampling_ratio, aligned)

    x_cpu = x.clone().requires_grad_()
    out_cpu = ops.roi_align(x_cpu, rois, *args)
    grad_out = torch.rand(out_cpu.shape, dtype=torch.float64, generator=_gen(16)).to(dtype)
    out_cpu.backward(grad_out)

    x_gpu = x.to(CUDA).requires_grad_()
    out = ops.roi_align(x_gpu, rois.to(CUDA), *args)
    assert out.device.type == CUDA and out.dtype == dtype and out.shape == (rois.shape[0], 3, 5, 4)
    out.backward(grad_out.to(CUDA))
    torch.testing.assert_close(out.cpu(), out_cpu, **TOL[dtype])
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, **TOL[dtype])

    x_tv = x.to(CUDA).requires_grad_()
    out_tv = torchvision.ops.roi_align(x_tv, rois.to(CUDA), *args)
    out_tv.backward(grad_out.to(CUDA))
    torch.testing.assert_close(out, out_tv, **TOL[dtype])
    torch.testing.assert_close(x_gpu.grad, x_tv.grad, **TOL[dtype])


def test_roi_align_many_rois_grid_stride():
    # K * C * ph * pw = 12.5M outputs: more than the 4096 x 512 threads launched, so the grid-stride loop wraps.
    x = torch.rand(2, 256, 50, 60, generator=_gen(17))
    boxes = random_boxes(1000, seed=18, size=230.0)
    rois = torch.cat([torch.randint(0, 2, (1000, 1), generator=_gen(19)).float(), boxes], 1).to(CUDA)
    x_gpu = x.to(CUDA).requires_grad_()
    out = ops.roi_align(x_gpu, rois, 7, 0.25, 2, True)
    x_tv = x.to(CUDA).requires_grad_()
    out_tv = torchvision.ops.roi_align(x_tv, rois, 7, 0.25, 2, True)
    torch.testing.assert_close(out, out_tv, **TOL[torch.float32])
    grad_out = torch.rand_like(out)
    out.backward(grad_out)
    out_tv.backward(grad_out)
    torch.testing.assert_close(x_gpu.grad, x_tv.grad, rtol=1e-4, atol=1e-4)  # atomics add in any order


def test_roi_ops_beyond_a_32_bit_index():
    # More than 2^31 output elements: the kernels switch from their 32-bit index to the 64-bit one.
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2 ** 30:
        pytest.skip("needs 24 GiB of free CUDA memory")
    x = torch.rand(1, 1, 16, 16, generator=_gen(40)).half().to(CUDA)
    k = 2 ** 31 // 49 + 1000
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 12.0]], dtype=torch.float16, device=CUDA).expand(k, 5).contiguous()
    ref = _C.roi_align(x, rois[:1], 1.0, 7, 7, 2, True)
    out = _C.roi_align(x, rois, 1.0, 7, 7, 2, True)
    assert out.shape == (k, 1, 7, 7) and bool((out[-1] == ref[0]).all()) and bool((out[k // 2] == ref[0]).all())
    del out
    pooled, _ = _C.roi_pool(x, rois, 1.0, 7, 7)
    assert bool((pooled[-1] == _C.roi_pool(x, rois[:1], 1.0, 7, 7)[0][0]).all())


def test_roi_align_list_of_boxes_and_channels_last():
    x = feature_map().to(CUDA)
    rois = tricky_rois().to(CUDA)
    expected = ops.roi_align(x, rois, (3, 2), 1.0, -1, True)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i).flatten() for i in range(2)])
    torch.testing.assert_close(ops.roi_align(x, per_image, (3, 2), 1.0, -1, True), expected[order], rtol=0, atol=0)

    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    out = ops.roi_align(x_cl, rois, (3, 2), 1.0, -1, True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    x_ref = x.clone().requires_grad_()
    ops.roi_align(x_ref, rois, (3, 2), 1.0, -1, True).sum().backward()
    torch.testing.assert_close(x_cl.grad, x_ref.grad, **TOL[torch.float32])


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_gradcheck(aligned):
    x = torch.rand(2, 2, 6, 7, dtype=torch.float64, device=CUDA, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.7, 4.3, 5.1], [1, -1.2, 1.0, 3.0, 8.5], [0, 2.2, 1.1, 5.5, 3.3]],
                        dtype=torch.float64, device=CUDA)
    for sampling_ratio in (2, -1):
        assert torch.autograd.gradcheck(
            lambda t: ops.roi_align(t, rois, (3, 2), 0.9, sampling_ratio, aligned), (x,), eps=1e-6, atol=1e-5
        )


# ----------------------------------------------------------------------------------------------------------------
# roi_pool


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
@pytest.mark.parametrize("output_size", [(5, 4), (1, 1), (12, 13)])
def test_roi_pool_forward_backward(dtype, spatial_scale, output_size):
    x, rois = feature_map(dtype), tricky_rois(dtype, spatial_scale)
    ph, pw = output_size
    out_cpu, arg_cpu = _C.roi_pool(x, rois, spatial_scale, ph, pw)
    out, arg = _C.roi_pool(x.to(CUDA), rois.to(CUDA), spatial_scale, ph, pw)
    assert out.dtype == dtype and arg.dtype == torch.int32 and out.shape == arg.shape == (rois.shape[0], 3, ph, pw)
    torch.testing.assert_close(arg.cpu(), arg_cpu, rtol=0, atol=0)
    torch.testing.assert_close(out.cpu(), out_cpu, rtol=0, atol=0)  # a maximum is one of the inputs
    assert bool((arg == -1).any())  # the RoIs outside the map give empty bins ...
    assert bool((out[arg == -1] == 0).all())  # ... which are 0

    grad_out = torch.rand(out.shape, dtype=torch.float64, generator=_gen(20)).to(dtype)
    x_cpu = x.clone().requires_grad_()
    ops.roi_pool(x_cpu, rois, output_size, spatial_scale).backward(grad_out)
    x_gpu = x.to(CUDA).requires_grad_()
    out_face = ops.roi_pool(x_gpu, rois.to(CUDA), output_size, spatial_scale)
    out_face.backward(grad_out.to(CUDA))
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, **TOL[dtype])

    x_tv = x.to(CUDA).requires_grad_()
    out_tv = torchvision.ops.roi_pool(x_tv, rois.to(CUDA), output_size, spatial_scale)
    out_tv.backward(grad_out.to(CUDA))
    torch.testing.assert_close(out_face, out_tv, rtol=0, atol=0)
    torch.testing.assert_close(x_gpu.grad, x_tv.grad, **TOL[dtype])


def test_roi_pool_gradcheck():
    # distinct values, so that the eps of the finite differences never changes which element is the maximum
    x = (torch.randperm(2 * 2 * 8 * 9, generator=_gen(21)).to(torch.float64) / 100).reshape(2, 2, 8, 9)
    x = x.to(CUDA).requires_grad_()
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 6.0], [1, 1.4, 2.2, 8.9, 7.6], [0, -2.0, 3.0, 3.0, 20.0]],
                        dtype=torch.float64, device=CUDA)
    assert torch.autograd.gradcheck(lambda t: ops.roi_pool(t, rois, (3, 2), 1.0), (x,), eps=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# common behaviour


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_reduced_precision(dtype, tol):
    # The kernels compute in float32 from the reduced-precision values, so they must match a float32 run on the
    # same (rounded) values up to the final rounding of the result.
    x = feature_map(torch.float32).to(dtype).to(CUDA)
    rois = tricky_rois(torch.float32, 0.5).to(dtype).to(CUDA)
    x32, rois32 = x.float(), rois.float()
    for aligned in (False, True):
        xh = x.clone().requires_grad_()
        out = ops.roi_align(xh, rois, (5, 4), 0.5, -1, aligned)
        assert out.dtype == dtype
        xf = x32.clone().requires_grad_()
        ref = ops.roi_align(xf, rois32, (5, 4), 0.5, -1, aligned)
        torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
        grad_out = torch.rand(ref.shape, generator=_gen(22)).to(dtype).to(CUDA)
        out.backward(grad_out)
        ref.backward(grad_out.float())
        assert xh.grad.dtype == dtype
        torch.testing.assert_close(xh.grad.float(), xf.grad, rtol=tol, atol=tol)

    out, arg = _C.roi_pool(x, rois, 0.5, 5, 4)
    out32, arg32 = _C.roi_pool(x32, rois32, 0.5, 5, 4)
    torch.testing.assert_close(arg, arg32, rtol=0, atol=0)
    torch.testing.assert_close(out.float(), out32, rtol=0, atol=0)
    xh = x.clone().requires_grad_()
    ops.roi_pool(xh, rois, (5, 4), 0.5).sum().backward()
    xf = x32.clone().requires_grad_()
    ops.roi_pool(xf, rois32, (5, 4), 0.5).sum().backward()
    torch.testing.assert_close(xh.grad.float(), xf.grad, rtol=0, atol=0)  # small integer counts are exact


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_matches_cpu(dtype):
    # Both devices compute float16 / bfloat16 in float32 and round once.
    x = feature_map(torch.float32).to(dtype)
    rois = tricky_rois(torch.float32, 0.5).to(dtype)
    for aligned in (False, True):
        cpu = ops.roi_align(x, rois, (5, 4), 0.5, -1, aligned)
        torch.testing.assert_close(ops.roi_align(x.to(CUDA), rois.to(CUDA), (5, 4), 0.5, -1, aligned).cpu(), cpu,
                                   rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(ops.roi_pool(x.to(CUDA), rois.to(CUDA), (5, 4), 0.5).cpu(),
                               ops.roi_pool(x, rois, (5, 4), 0.5), rtol=0, atol=0)


def test_empty_inputs():
    keep = ops.nms(torch.empty(0, 4, device=CUDA), torch.empty(0, device=CUDA), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64 and keep.device.type == CUDA
    x = feature_map().to(CUDA).requires_grad_()
    no_rois = torch.empty(0, 5, device=CUDA)
    out = ops.roi_align(x, no_rois, (3, 3), 1.0, 2, True)
    assert out.shape == (0, 3, 3, 3) and out.device.type == CUDA
    out.sum().backward()
    assert x.grad.shape == x.shape and bool((x.grad == 0).all())
    x.grad = None
    out = ops.roi_pool(x, no_rois, (3, 3), 1.0)
    assert out.shape == (0, 3, 3, 3)
    out.sum().backward()
    assert bool((x.grad == 0).all())
    out, arg = _C.roi_pool(torch.empty(2, 0, 10, 12, device=CUDA), tricky_rois().to(CUDA), 1.0, 3, 3)
    assert out.shape == arg.shape == (10, 0, 3, 3)


def test_cpu_tensors_still_use_cpu_kernels():
    for name in ("nms", "batched_nms", "soft_nms", "roi_align", "_roi_align_backward", "roi_pool",
                 "_roi_pool_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"detection::{name}", "CPU"), name
    boxes, scores = random_boxes(300, seed=23), distinct_scores(300, seed=24)
    keep = ops.nms(boxes, scores, 0.5)
    assert keep.device.type == "cpu"
    torch.testing.assert_close(keep, torchvision.ops.nms(boxes, scores, 0.5), rtol=0, atol=0)
    x, rois = feature_map(), tricky_rois()
    out = ops.roi_align(x, rois, 3, 1.0, 2, False)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, 3, 1.0, 2, False), **TOL[torch.float32])
    out = ops.roi_pool(x, rois, 3, 1.0)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, torchvision.ops.roi_pool(x, rois, 3, 1.0), rtol=0, atol=0)


def test_mixed_devices_and_bad_arguments_raise():
    boxes, scores = random_boxes(10), distinct_scores(10)
    with pytest.raises((RuntimeError, ValueError)):
        ops.nms(boxes.to(CUDA), scores, 0.5)
    with pytest.raises(RuntimeError):
        _C.nms(boxes.to(CUDA), scores.double().to(CUDA), 0.5)
    x, rois = feature_map(), tricky_rois()
    with pytest.raises((RuntimeError, ValueError)):
        ops.roi_align(x.to(CUDA), rois, 3)
    with pytest.raises(RuntimeError):
        _C.roi_align(x.to(CUDA), rois.to(CUDA)[:, :4], 1.0, 3, 3, 2, True)
    with pytest.raises(RuntimeError):
        _C.roi_pool(x.to(CUDA), rois.to(CUDA), 1.0, 0, 3)
    with pytest.raises(RuntimeError):
        _C.roi_align(x.to(CUDA), rois.to(CUDA), 0.0, 3, 3, 2, True)


# The argument checks of csrc/common/op_checks.h: each bad input is refused on CUDA with the CPU kernel's message.
X = torch.zeros(2, 3, 8, 8)
R = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])
BAD_ROI_ARGS = [
    (X[0], R, {}, "4-D"),
    (X, R[:, 1:], {}, "\\[K, 5\\]"),
    (X, R[0], {}, "\\[K, 5\\]"),
    (X, R.double(), {}, "same dtype"),
    (X, R, {"pooled": (0, 2)}, "positive"),
    (X, R, {"pooled": (2, -1)}, "positive"),
    (X, R, {"scale": -1.0}, "spatial_scale"),
    (X, R, {"scale": math.nan}, "spatial_scale"),
]


def _roi_args(op, extra):
    ph, pw = extra.get("pooled", (2, 2))
    scale = extra.get("scale", 1.0)
    return (scale, ph, pw, 2, True) if op == "roi_align" else (scale, ph, pw)


def _message(fn):
    with pytest.raises(RuntimeError) as info:
        fn()
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("input, rois, extra, match", BAD_ROI_ARGS)
def test_bad_roi_arguments_raise_as_on_cpu(op, input, rois, extra, match):
    args = _roi_args(op, extra)
    cpu = _message(lambda: getattr(_C, op)(input, rois, *args))
    cuda = _message(lambda: getattr(_C, op)(input.to(CUDA), rois.to(CUDA), *args))
    assert cuda == cpu
    assert re.search(match, cuda), cuda


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_unsupported_dtype_and_devices_raise(op):
    args = _roi_args(op, {})
    with pytest.raises(RuntimeError, match="must be float16, bfloat16, float32 or float64 on CUDA"):
        getattr(_C, op)(X.int().to(CUDA), R.int().to(CUDA), *args)
    with pytest.raises(RuntimeError, match=f"{op}: rois must be a CUDA tensor"):
        getattr(_C, op)(X.to(CUDA), R, *args)
    with pytest.raises(RuntimeError, match=f"{op}: input must be a CUDA tensor"):
        getattr(_C, op)(X, R.to(CUDA), *args)


@pytest.mark.parametrize("make_args", [
    lambda: (torch.rand(5, 5), torch.rand(5)),
    lambda: (torch.rand(2, 5, 4), torch.rand(5)),
    lambda: (torch.rand(5, 4), torch.rand(5, 1)),
    lambda: (torch.rand(5, 4), torch.rand(4)),
    lambda: (torch.rand(5, 4), torch.rand(5).double()),
])
def test_bad_nms_arguments_raise_as_on_cpu(make_args):
    boxes, scores = make_args()
    cpu = _message(lambda: _C.nms(boxes, scores, 0.5))
    assert _message(lambda: _C.nms(boxes.to(CUDA), scores.to(CUDA), 0.5)) == cpu


def test_backward_bad_arguments_raise_as_on_cpu():
    g = torch.zeros(1, 3, 2, 2)
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    calls = [
        lambda d: _C._roi_align_backward(g[:, :2].to(d), R.to(d), 1.0, 2, 2, 2, 3, 8, 8, 2, True),
        lambda d: _C._roi_align_backward(g.double().to(d), R.to(d), 1.0, 2, 2, 2, 3, 8, 8, 2, True),
        lambda d: _C._roi_align_backward(g.to(d), R.to(d), 1.0, 2, 2, 2, 3, -8, 8, 2, True),
        lambda d: _C._roi_pool_backward(g.to(d), R.to(d), argmax.long().to(d), 1.0, 2, 2, 2, 3, 8, 8),
        lambda d: _C._roi_pool_backward(g.to(d), R.to(d), argmax[:, :2].to(d), 1.0, 2, 2, 2, 3, 8, 8),
    ]
    for call in calls:
        assert _message(lambda: call(CUDA)) == _message(lambda: call("cpu"))


def test_absurd_fixed_sampling_ratio_raises_as_on_cpu():
    x, rois = feature_map(), tricky_rois()
    any_roi = lambda m: re.sub(r"RoI \d+", "RoI n", m)  # noqa: E731  (the CPU's threads may meet another RoI first)
    cpu = _message(lambda: _C.roi_align(x, rois, 1.0, 7, 7, 2 ** 40, True))
    assert "too many" in cpu
    assert any_roi(_message(lambda: _C.roi_align(x.to(CUDA), rois.to(CUDA), 1.0, 7, 7, 2 ** 40, True))) == any_roi(cpu)


# Data checks: the CUDA kernels zero the offending RoI and record the CPU kernel's error, raised later.
BAD_BATCH_ROIS = torch.tensor([[1, 0, 0, 5, 5], [2, 0, 0, 5, 5], [-1, 0, 0, 5, 5]], dtype=torch.float32)


def test_batch_index_out_of_range_is_reported_asynchronously():
    x = feature_map().requires_grad_()
    cpu = _message(lambda: ops.roi_align(x, BAD_BATCH_ROIS, 2, 1.0, 2, True))
    assert "is not a batch index in [0, 2)" in cpu
    x_gpu = x.detach().to(CUDA).requires_grad_()
    out = ops.roi_align(x_gpu, BAD_BATCH_ROIS.to(CUDA), 2, 1.0, 2, True)  # no sync, no error yet
    assert bool((out[1:] == 0).all()) and bool((out[0] != 0).any())
    with pytest.raises(RuntimeError, match=r"roi_align: rois\[[12], 0\] = -?\d+ is not a batch index in \[0, 2\) "
                                           r"\[found on cuda:\d+ by a CUDA kernel launched earlier"):
        ops.check_async_errors()
    ops.check_async_errors()  # raising cleared the record
    out.sum().backward()
    assert bool((x_gpu.grad[0] == 0).all()) and bool((x_gpu.grad[1] != 0).any())
    with pytest.raises(RuntimeError, match=r"roi_align_backward: rois\[[12], 0\]"):
        ops.check_async_errors()


def test_async_error_is_raised_by_the_next_cuda_nms():
    x = feature_map().to(CUDA)
    out, arg = _C.roi_pool(x, BAD_BATCH_ROIS.to(CUDA), 1.0, 2, 2)
    assert bool((arg[1:] == -1).all()) and bool((out[1:] == 0).all()) and bool((arg[0] >= 0).all())
    boxes, scores = random_boxes(100).to(CUDA), distinct_scores(100).to(CUDA)
    with pytest.raises(RuntimeError, match=r"roi_pool: rois\[[12], 0\] = -?\d+ is not a batch index"):
        ops.nms(boxes, scores, 0.5)
    torch.testing.assert_close(ops.nms(boxes, scores, 0.5).cpu(), ops.nms(boxes.cpu(), scores.cpu(), 0.5))


def test_foreign_argmax_is_reported_asynchronously():
    g = torch.ones(1, 3, 2, 2, device=CUDA)
    argmax = torch.full((1, 3, 2, 2), 64, dtype=torch.int32, device=CUDA)  # outside an 8 x 8 map
    cpu = _message(lambda: _C._roi_pool_backward(g.cpu(), R, argmax.cpu(), 1.0, 2, 2, 2, 3, 8, 8))
    grad = _C._roi_pool_backward(g, R.to(CUDA), argmax, 1.0, 2, 2, 2, 3, 8, 8)
    assert bool((grad == 0).all())
    with pytest.raises(RuntimeError) as info:
        ops.check_async_errors()
    assert str(info.value).startswith(cpu.split(")")[0])  # "roi_pool_backward: argmax holds indices outside [-1, ..."


@pytest.mark.parametrize("roi", [[0, 0, 0, math.inf, 5], [0, -1e30, 0, 1e30, 1e30]])
def test_unbounded_adaptive_grid_is_refused_not_hung(roi):
    x, rois = feature_map(), torch.tensor([roi], dtype=torch.float32)
    cpu = _message(lambda: _C.roi_align(x, rois, 1.0, 7, 7, -1, True))
    assert "samples per bin, too many" in cpu
    start = time.perf_counter()
    out = _C.roi_align(x.to(CUDA), rois.to(CUDA), 1.0, 7, 7, -1, True)
    torch.cuda.synchronize()
    assert time.perf_counter() - start < 10  # the old kernel looped for ever here
    assert bool((out == 0).all())
    with pytest.raises(RuntimeError) as info:
        ops.check_async_errors()
    assert str(info.value).startswith(cpu)


def test_nms_refuses_a_mask_that_cannot_fit():
    n = 2_000_000  # mask: 2e6 x 31250 x 8 bytes = 500 GB
    boxes = random_boxes(n, seed=25, size=1000.0).to(CUDA)
    scores = torch.rand(n, generator=_gen(26)).to(CUDA)
    with pytest.raises(RuntimeError, match=r"nms: 2000000 boxes need a 500000000000-byte .* suppression mask .* "
                                           r"run NMS on fewer boxes at a time"):
        _C.nms(boxes, scores, 0.5)
    with pytest.raises(RuntimeError, match="at most 4194240 boxes"):
        _C.nms(boxes[:1].expand(5_000_000, 4), scores[:1].expand(5_000_000), 0.5)
    keep = _C.nms(boxes[:1000], scores[:1000], 0.5)  # still usable
    torch.testing.assert_close(keep.cpu(), _C.nms(boxes[:1000].cpu(), scores[:1000].cpu(), 0.5))


def test_backward_alerts_nondeterminism():
    x = feature_map().to(CUDA).requires_grad_()
    rois = tricky_rois().to(CUDA)
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="roi_align_backward_cuda"):
            ops.roi_align(x, rois, 3, 1.0, 2, True).sum().backward()
        with pytest.raises(RuntimeError, match="roi_pool_backward_cuda"):
            ops.roi_pool(x, rois, 3, 1.0).sum().backward()
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
