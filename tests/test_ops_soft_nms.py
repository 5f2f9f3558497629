"""Soft-NMS (detection.ops.soft_nms / batched_soft_nms) against the authors' reference implementation.

The reference is Bodla, Singh, Chellappa and Davis, "Soft-NMS - Improving Object Detection With One Line of Code"
(ICCV 2017), github.com/bharatsingh430/soft-nms, lib/nms/cpu_nms.pyx, `cpu_soft_nms`, transcribed below line by
line. Two things are added, neither changing what it computes: the Cython `float` variables are numpy float32
scalars (so every operation rounds as the compiled Cython does, np.exp taking the Python float the Cython passes it),
and a `rows` list follows the reference's own row swaps and moves, so that its kept rows can be named by input index.

Box convention: the reference's boxes are inclusive pixels (width x2 - x1 + 1), ours continuous (width x2 - x1),
the toolkit's contract. The VOC reader converts one to the other by x2 + 1, y2 + 1, so the tests run the reference on
boxes B and our op on B + (0, 0, 1, 1). With coordinates on a 1/4-pixel grid below 2^9 both conventions' areas,
intersections and unions are exact in float32, so the two must agree bit for bit: the same kept indices in the same
order and the same float32 scores.
"""
import numpy as np
import pytest
import torch

from detection import ops

pytestmark = pytest.mark.skipif(ops.BACKEND != "compiled", reason="tests the compiled ops (DETECTION_OPS is set)")


# ---------------------------------------------------------------------------------------- the reference, transcribed
def cymax(a, b):  # cdef inline np.float32_t max(np.float32_t a, np.float32_t b)
    return a if a >= b else b


def cymin(a, b):  # cdef inline np.float32_t min(np.float32_t a, np.float32_t b)
    return a if a <= b else b


def cpu_soft_nms(boxes, sigma=0.5, Nt=0.3, threshold=0.001, method=0, real=np.float32):
    """cpu_soft_nms(np.ndarray[float, ndim=2] boxes, float sigma=0.5, float Nt=0.3, float threshold=0.001,
    unsigned int method=0); boxes [N, 5] (x1, y1, x2, y2, score) of dtype `real`, modified in place. Returns
    (keep, rows): keep as the reference returns it (positions 0..N-1 of the modified array) and the input row at
    each of those positions (the added bookkeeping)."""
    sigma, Nt, threshold = real(sigma), real(Nt), real(threshold)
    N = boxes.shape[0]
    rows = list(range(N))  # added: follows the row moves below
    pos = 0
    maxscore = real(0)
    maxpos = 0

    for i in range(N):
        maxscore = boxes[i, 4]
        maxpos = i

        tx1 = boxes[i, 0]
        ty1 = boxes[i, 1]
        tx2 = boxes[i, 2]
        ty2 = boxes[i, 3]
        ts = boxes[i, 4]

        pos = i + 1
        # get max box
        while pos < N:
            if maxscore < boxes[pos, 4]:
                maxscore = boxes[pos, 4]
                maxpos = pos
            pos = pos + 1

        # add max box as a detection
        boxes[i, 0] = boxes[maxpos, 0]
        boxes[i, 1] = boxes[maxpos, 1]
        boxes[i, 2] = boxes[maxpos, 2]
        boxes[i, 3] = boxes[maxpos, 3]
        boxes[i, 4] = boxes[maxpos, 4]

        # swap ith box with position of max box
        boxes[maxpos, 0] = tx1
        boxes[maxpos, 1] = ty1
        boxes[maxpos, 2] = tx2
        boxes[maxpos, 3] = ty2
        boxes[maxpos, 4] = ts
        rows[i], rows[maxpos] = rows[maxpos], rows[i]  # added

        tx1 = boxes[i, 0]
        ty1 = boxes[i, 1]
        tx2 = boxes[i, 2]
        ty2 = boxes[i, 3]
        ts = boxes[i, 4]

        pos = i + 1
        # NMS iterations, note that N changes if detection boxes fall below threshold
        while pos < N:
            x1 = boxes[pos, 0]
            y1 = boxes[pos, 1]
            x2 = boxes[pos, 2]
            y2 = boxes[pos, 3]
            s = boxes[pos, 4]  # noqa: F841 (as in the reference)

            area = (x2 - x1 + 1) * (y2 - y1 + 1)
            iw = (cymin(tx2, x2) - cymax(tx1, x1) + 1)
            if iw > 0:
                ih = (cymin(ty2, y2) - cymax(ty1, y1) + 1)
                if ih > 0:
                    ua = real(float((tx2 - tx1 + 1) * (ty2 - ty1 + 1) + area - iw * ih))
                    ov = iw * ih / ua  # iou between max box and detection box

                    if method == 1:  # linear
                        if ov > Nt:
                            weight = 1 - ov
                        else:
                            weight = 1
                    elif method == 2:  # gaussian
                        weight = real(np.exp(float(-(ov * ov) / sigma)))  # Cython: C float in, double exp, float out
                    else:  # original NMS
                        if ov > Nt:
                            weight = 0
                        else:
                            weight = 1

                    boxes[pos, 4] = weight * boxes[pos, 4]

            # if box score falls below threshold, discard the box by swapping with last box
            # update N
            if boxes[pos, 4] < threshold:
                boxes[pos, 0] = boxes[N - 1, 0]
                boxes[pos, 1] = boxes[N - 1, 1]
                boxes[pos, 2] = boxes[N - 1, 2]
                boxes[pos, 3] = boxes[N - 1, 3]
                boxes[pos, 4] = boxes[N - 1, 4]
                rows[pos] = rows[N - 1]  # added
                N = N - 1
                pos = pos - 1

            pos = pos + 1

    keep = [i for i in range(N)]
    return keep, rows[:N]


# ------------------------------------------------------------------------------------------------------- helpers
METHODS = {"linear": 1, "gaussian": 2}


def reference(boxes, scores, method, iou_threshold, sigma, min_score, real=np.float32):
    """Our op's expected output from the transcription: (input rows, float scores) in selection order."""
    dets = np.concatenate([boxes.numpy(), scores.numpy()[:, None]], axis=1).astype(real)
    keep, rows = cpu_soft_nms(dets, sigma=sigma, Nt=iou_threshold, threshold=min_score, method=METHODS[method],
                              real=real)
    return torch.tensor(rows, dtype=torch.int64), torch.from_numpy(dets[keep, 4].copy())


def continuous(boxes):
    """Inclusive-pixel boxes -> the toolkit's continuous boxes (x2 + 1, y2 + 1; exact on the 1/4-pixel grid)."""
    return boxes + torch.tensor([0, 0, 1, 1], dtype=boxes.dtype)


def grid_boxes(n, seed, size=200.0, max_wh=60.0, dtype=torch.float32):
    """[n, 4] inclusive-pixel boxes on a 1/4-pixel grid inside [0, size + max_wh) (below 2^9: their products stay
    exact in float32), clustered so that many overlap, with exact repeats and zero-area boxes (x2 = x1 - 1 inclusive,
    i.e. zero width once continuous)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(n // 6, 1), 2, generator=g) * size
    c = centres[torch.randint(0, centres.shape[0], (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
    wh = 4 + torch.rand(n, 2, generator=g) * max_wh
    b = torch.cat([c - wh / 2, c + wh / 2], 1).clamp(0, size + max_wh - 1)
    b = torch.round(b * 4) / 4
    k = min(b[::7].shape[0], b[1::7].shape[0])
    b[::7][:k] = b[1::7][:k]  # exact repeats
    b[3::11, 2] = b[3::11, 0] - 1  # zero width (inclusive convention)
    b[5::13, 3] = b[5::13, 1] - 1  # zero height
    return b.to(dtype)


def tied_scores(n, seed, levels=6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 100)
    return (torch.randint(1, levels + 1, (n,), generator=g).to(torch.float64) / levels).to(dtype)


def random_scores(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 200)
    return torch.rand(n, generator=g, dtype=torch.float64).to(dtype)


def assert_matches_reference(boxes, scores, method, iou_threshold=0.3, sigma=0.5, min_score=0.001,
                             dtype=torch.float32):
    real = np.float32 if dtype == torch.float32 else np.float64
    rows, kept = reference(boxes, scores, method, iou_threshold, sigma, min_score, real=real)
    keep, got = ops.soft_nms(continuous(boxes), scores, method, iou_threshold, sigma, min_score)
    assert keep.dtype == torch.int64 and got.dtype == scores.dtype
    assert torch.equal(keep, rows), (keep.tolist(), rows.tolist())
    assert torch.equal(got, kept.to(got.dtype))
    return keep, got


# --------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scores_kind", ["random", "tied"])
def test_soft_nms_is_the_reference_bit_for_bit(method, seed, scores_kind):
    boxes = grid_boxes(150, seed)
    scores = random_scores(150, seed) if scores_kind == "random" else tied_scores(150, seed)
    for iou_threshold, sigma, min_score in [(0.3, 0.5, 0.001), (0.5, 0.1, 0.05), (0.0, 2.0, 0.0)]:
        keep, kept = assert_matches_reference(boxes, scores, method, iou_threshold, sigma, min_score)
        assert bool((kept[:-1] >= kept[1:]).all())  # selection order is by decreasing decayed score
        assert keep.unique().numel() == keep.numel()


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_float64_follows_the_reference_in_float64(method):
    boxes = grid_boxes(80, 3, dtype=torch.float64)
    scores = random_scores(80, 3, dtype=torch.float64)
    assert_matches_reference(boxes, scores, method, 0.4, 0.3, 0.01, dtype=torch.float64)


def test_adversarial_cases():
    b = torch.tensor([[10.0, 10, 29, 29]] * 4 + [[12.0, 12, 31, 31], [50.0, 50, 49, 60], [50.0, 50, 49, 60],
                                                 [0.0, 0, 99, 99], [10.0, 10, 29, 29]])
    cases = [
        torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]),   # all tied, identical boxes
        torch.tensor([0.5, 0.9, 0.5, 0.9, 0.7, 0.8, 0.8, 0.1, 0.9]),   # ties among identical boxes
        torch.tensor([0.0005] * 9),                                     # all below min_score: the first max stays
        torch.tensor([0.9, 0.0005, 0.8, 0.0, 0.7, 0.6, 0.0002, 0.5, 0.4]),  # some start below min_score
    ]
    for scores in cases:
        for method in ("linear", "gaussian"):
            for nt in (0.3, 0.0, 1.0):
                assert_matches_reference(b, scores, method, nt, 0.5, 0.001)
    # Identical boxes: IoU 1 decays a linear duplicate to 0, so it is dropped; a gaussian one keeps exp(-1/sigma).
    keep, kept = ops.soft_nms(continuous(b[:2]), torch.tensor([0.9, 0.8]), "linear", 0.3, 0.5, 0.001)
    assert keep.tolist() == [0] and kept.tolist() == pytest.approx([0.9])
    keep, kept = ops.soft_nms(continuous(b[:2]), torch.tensor([0.9, 0.8]), "gaussian", 0.3, 0.5, 0.001)
    assert keep.tolist() == [0, 1] and kept[1].item() == pytest.approx(0.8 * np.exp(-2.0), rel=1e-6)
    # Zero-area boxes decay nothing and are decayed by nothing (no NaN from 0 / 0).
    z = torch.tensor([[5.0, 5, 5, 9], [5.0, 5, 5, 9], [4.0, 4, 8, 8]])
    keep, kept = ops.soft_nms(z, torch.tensor([0.9, 0.8, 0.7]), "gaussian")
    assert keep.tolist() == [0, 1, 2] and kept.tolist() == pytest.approx([0.9, 0.8, 0.7])


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_batched_soft_nms_is_the_reference_per_category(method):
    boxes = grid_boxes(240, 7)
    scores = tied_scores(240, 7, levels=10)
    idxs = torch.randint(0, 5, (240,), generator=torch.Generator().manual_seed(7)) * 3 - 4  # sparse, negative
    keep, kept = ops.batched_soft_nms(continuous(boxes), scores, idxs, method, 0.3, 0.5, 0.01)
    rows, decayed = [], []
    for c in torch.unique(idxs).tolist():  # increasing idx
        sel = torch.where(idxs == c)[0]
        r, s = reference(boxes[sel], scores[sel], method, 0.3, 0.5, 0.01)
        rows.append(sel[r])
        decayed.append(s)
    rows, decayed = torch.cat(rows), torch.cat(decayed)
    order = torch.sort(decayed, descending=True, stable=True).indices
    assert torch.equal(keep, rows[order]) and torch.equal(kept, decayed[order])
    # One category: batched_soft_nms is soft_nms.
    one = torch.zeros_like(idxs)
    assert all(torch.equal(a, b) for a, b in zip(ops.batched_soft_nms(boxes, scores, one, method),
                                                  ops.soft_nms(boxes, scores, method)))


def test_hard_is_nms_and_batched_nms():
    boxes = continuous(grid_boxes(200, 11))
    scores = tied_scores(200, 11)
    idxs = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(11))
    for thr in (0.3, 0.7):
        keep, kept = ops.soft_nms(boxes, scores, "hard", thr)
        assert torch.equal(keep, ops.nms(boxes, scores, thr)) and torch.equal(kept, scores[keep])
        keep, kept = ops.batched_soft_nms(boxes, scores, idxs, "hard", thr)
        assert torch.equal(keep, ops.batched_nms(boxes, scores, idxs, thr)) and torch.equal(kept, scores[keep])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_computed_in_float32(dtype):
    boxes = continuous(grid_boxes(100, 5)).to(dtype)
    scores = random_scores(100, 5).to(dtype)
    keep, kept = ops.soft_nms(boxes, scores, "gaussian")
    keep32, kept32 = ops.soft_nms(boxes.float(), scores.float(), "gaussian")
    assert kept.dtype == dtype and torch.equal(keep, keep32) and torch.equal(kept, kept32.to(dtype))


def test_empty_inputs_and_bad_arguments():
    keep, kept = ops.soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == (0,) and keep.dtype == torch.int64 and kept.shape == (0,)
    keep, kept = ops.batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert keep.shape == (0,)
    b, s = torch.rand(3, 4), torch.rand(3)
    with pytest.raises(ValueError, match="'hard', 'linear', 'gaussian'"):
        ops.soft_nms(b, s, "soft")
    with pytest.raises(RuntimeError, match=r"soft_nms: sigma must be a positive finite number, got 0"):
        ops.soft_nms(b, s, "gaussian", sigma=0.0)
    with pytest.raises(RuntimeError, match=r"soft_nms: boxes must be a \[N, 4\] tensor"):
        ops.soft_nms(torch.rand(3, 5), s)
    with pytest.raises(RuntimeError, match=r"soft_nms: idxs must be a 1-D \[N\] tensor of N = 3 categories"):
        ops.batched_soft_nms(b, s, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="idxs must be an integer tensor"):
        ops.batched_soft_nms(b, s, torch.zeros(3))
    with pytest.raises(RuntimeError, match="method must be 1 \\(linear\\) or 2 \\(gaussian\\), got 0"):
        torch.ops.detection.soft_nms(b, s, None, 0, 0.3, 0.5, 0.001)


def test_soft_nms_opcheck_and_torch_export(tmp_path):
    boxes = continuous(grid_boxes(60, 2))
    scores = random_scores(60, 2)
    idxs = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(2))
    torch.library.opcheck(torch.ops.detection.soft_nms.default, (boxes, scores, idxs, 2, 0.3, 0.5, 0.001))
    torch.library.opcheck(torch.ops.detection.soft_nms.default, (boxes, scores, None, 1, 0.3, 0.5, 0.001))

    class Net(torch.nn.Module):
        def forward(self, boxes, scores, idxs):
            return ops.batched_soft_nms(boxes, scores, idxs, "gaussian", 0.3, 0.5, 0.001)

    n = torch.export.Dim("n", min=2)
    program = torch.export.export(Net(), (boxes, scores, idxs), dynamic_shapes=({0: n}, {0: n}, {0: n})).module()
    more = continuous(grid_boxes(90, 4)), random_scores(90, 4), torch.randint(0, 3, (90,))
    for args in [(boxes, scores, idxs), more]:
        assert all(torch.equal(a, b) for a, b in zip(program(*args), Net()(*args)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx: the TorchScript-based exporter
def test_onnx_export_refuses_soft_nms_naming_the_config_key(tmp_path):
    from detection.export.symbolics import OPSET, register_onnx_symbolics

    class Net(torch.nn.Module):
        def forward(self, boxes, scores):
            return ops.soft_nms(boxes, scores, "linear")

    register_onnx_symbolics()
    with pytest.raises(Exception, match="TEST.NMS_METHOD"):
        torch.onnx.export(Net(), (torch.rand(5, 4) + torch.tensor([0, 0, 1, 1]), torch.rand(5)),
                          str(tmp_path / "soft.onnx"), dynamo=False, opset_version=OPSET)
