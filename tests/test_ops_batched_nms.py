"""Class-wise NMS in one compiled call (torch.ops.detection.batched_nms, behind detection.ops.batched_nms).

It must be exactly `nms` run on each category alone (no coordinate offset, no mirroring), with the kept boxes by
decreasing score and equal scores by lower index, on the adversarial cases of the quadrant version it replaces
(tests/test_ops.py; tests/test_export.py's scale case, generated here as scale_case) - eagerly, as a torch.export program and in onnxruntime
(NonMaxSuppression with per-category scores, detection/export/symbolics.py). The CUDA kernel is checked against this
one in test_ops_cuda.py.
"""
import numpy as np
import pytest
import torch

from detection import ops

pytestmark = pytest.mark.skipif(ops.BACKEND != "compiled", reason="tests the compiled ops (DETECTION_OPS is set)")


def per_category_nms(boxes, scores, idxs, thr):
    """The definition: ops.nms on each category alone, merged by decreasing score (equal scores: lower index)."""
    kept = [torch.empty(0, dtype=torch.int64)]
    for c in torch.unique(idxs):
        sel = torch.where(idxs == c)[0]
        kept.append(sel[ops.nms(boxes[sel], scores[sel], thr)])
    keep = torch.cat(kept).sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def clustered(n, seed, spread=300.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ctr = torch.rand(max(n // 8, 1), 2, generator=g, dtype=torch.float64) * spread
    c = ctr[torch.randint(0, ctr.shape[0], (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 4
    wh = 8 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 40
    return torch.cat([c - wh / 2, c + wh / 2], 1).to(dtype)


def scale_case(seed=0):
    """The scale case of tests/test_export.py, generated here: 2,000 random boxes of 80 classes up to 1333 px and
    300 pairs of class-79 squares whose IoU is a hair above 0.5 (x shifted by d = side (1 - t) / (1 + t) for
    t = 0.5 + 1e-6), where the coordinate-offset trick (class * (max + 1) added to the boxes) rounds the pairs."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(2000, 2, generator=g) * 1200
    size = 20 + torch.rand(2000, 2, generator=g) * 300
    spread = torch.cat([corner, corner + size], 1).clamp(max=1333)
    side = 100 + torch.rand(300, 1, generator=g, dtype=torch.float64) * 50
    xy = torch.rand(300, 2, generator=g, dtype=torch.float64) * 1000
    t = 0.5 + 1e-6
    first = torch.cat([xy, xy + side], 1)
    second = first + torch.cat([side * (1 - t) / (1 + t), torch.zeros_like(side)] * 2, 1)
    boxes = torch.cat([spread, first.float(), second.float()])
    scores = torch.cat([torch.rand(2000, generator=g), torch.full((300,), 0.9), torch.full((300,), 0.8)])
    labels = torch.cat([torch.randint(0, 80, (2000,), generator=g), torch.full((600,), 79)])
    return boxes, scores, labels


def cases():
    g = torch.Generator().manual_seed(1)
    boxes = clustered(600, 1)
    tied = torch.randint(0, 5, (600,), generator=g).float() / 5  # heavy ties, within and across categories
    yield "scale", (*scale_case(), 0.5)
    yield "ties", (boxes, tied, torch.randint(0, 6, (600,), generator=g), 0.5)
    same = boxes[:50].repeat(4, 1)  # identical boxes in four categories, equal scores
    yield "identical", (same, torch.full((200,), 0.5), torch.arange(200) // 50, 0.3)
    yield "sparse ids", (boxes, tied, (torch.randint(0, 9, (600,), generator=g) - 4) * 2 ** 40, 0.3)
    yield "int32 ids", (boxes, torch.rand(600, generator=g), torch.randint(0, 3, (600,), generator=g).int(), 0.7)
    yield "negative", (boxes - 500, torch.rand(600, generator=g), torch.randint(0, 4, (600,), generator=g), 0.5)
    yield "threshold 0", (boxes, torch.rand(600, generator=g), torch.randint(0, 4, (600,), generator=g), 0.0)
    yield "negative threshold", (boxes, torch.rand(600, generator=g), torch.randint(0, 4, (600,), generator=g), -0.1)
    zero = boxes.clone()
    zero[::5, 2] = zero[::5, 0]  # zero-area boxes: IoU 0 / 0 never suppresses
    yield "zero area", (zero, tied, torch.randint(0, 2, (600,), generator=g), 0.5)


@pytest.mark.parametrize("name, args", list(cases()), ids=[c[0] for c in cases()])
def test_batched_nms_is_per_category_nms(name, args):
    boxes, scores, idxs, thr = args
    keep = ops.batched_nms(boxes, scores, idxs, thr)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, per_category_nms(boxes, scores, idxs.long(), thr))
    assert torch.equal(keep, torch.ops.detection.batched_nms(boxes, scores, idxs, thr))


def test_the_coordinate_trick_differs_on_the_scale_case():
    boxes, scores, labels = scale_case()
    offset = ops.nms(boxes + (labels.to(boxes) * (boxes.max() + 1))[:, None], scores, 0.5)
    assert len(offset) != len(ops.batched_nms(boxes, scores, labels, 0.5))  # the case tells the two apart


def test_many_categories_and_one_large_category():
    """Categories run in parallel; a single category of > 16,384 boxes splits its suppression passes instead."""
    boxes = clustered(18000, 5, spread=3000.0)
    scores = torch.rand(18000, generator=torch.Generator().manual_seed(5))
    idxs = torch.randint(0, 200, (18000,), generator=torch.Generator().manual_seed(6))
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), per_category_nms(boxes, scores, idxs, 0.5))
    one = torch.full((18000,), 7)
    assert torch.equal(ops.batched_nms(boxes, scores, one, 0.5), ops.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_batched_nms_dtypes(dtype):
    boxes, idxs = clustered(300, 3), torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(3))
    scores = torch.rand(300, generator=torch.Generator().manual_seed(4))
    b, s = boxes.to(dtype), scores.to(dtype)
    assert torch.equal(ops.batched_nms(b, s, idxs, 0.5), per_category_nms(b.double(), s.double(), idxs, 0.5))


def test_bad_arguments_name_batched_nms():
    b, s = torch.rand(3, 4), torch.rand(3)
    with pytest.raises(RuntimeError, match=r"batched_nms: idxs must be a 1-D \[N\] tensor of N = 3 categories"):
        torch.ops.detection.batched_nms(b, s, torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(RuntimeError, match="batched_nms: idxs must be an integer tensor"):
        torch.ops.detection.batched_nms(b, s, torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match=r"batched_nms: boxes must be a \[N, 4\] tensor"):
        torch.ops.detection.batched_nms(torch.rand(3, 5), s, torch.zeros(3, dtype=torch.int64), 0.5)
    empty = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


class BatchedNms(torch.nn.Module):
    def forward(self, boxes, scores, labels):
        return ops.batched_nms(boxes, scores, labels, 0.5)


def test_torch_export_program_is_eager():
    boxes, scores, labels = scale_case()
    n = torch.export.Dim("n", min=2)
    program = torch.export.export(BatchedNms(), (boxes[:500], scores[:500], labels[:500]),
                                  dynamic_shapes=({0: n}, {0: n}, {0: n})).module()
    for _, (b, s, i, thr) in cases():
        if thr == 0.5:
            assert torch.equal(program(b, s, i), ops.batched_nms(b, s, i, 0.5))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx: the TorchScript-based exporter
def test_onnx_graph_gives_the_eager_indices(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime==1.32.0 (requirements.txt)")
    from detection.export import onnx_session
    from detection.export.symbolics import OPSET, register_onnx_symbolics

    register_onnx_symbolics()
    boxes, scores, labels = scale_case()
    path = str(tmp_path / "batched_nms.onnx")
    torch.onnx.export(BatchedNms(), (boxes[:500], scores[:500], labels[:500]), path, dynamo=False,
                      opset_version=OPSET, input_names=["b", "s", "l"],
                      dynamic_axes={"b": {0: "n"}, "s": {0: "n"}, "l": {0: "n"}})
    session = onnx_session(path)
    import onnx

    assert "NonMaxSuppression" in {n.op_type for n in onnx.load(path).graph.node}
    for name, (b, s, i, thr) in cases():
        if thr != 0.5:
            continue
        got = session.run(None, {"b": b.float().numpy(), "s": s.float().numpy(), "l": i.long().numpy()})[0]
        np.testing.assert_array_equal(got, ops.batched_nms(b, s, i, 0.5).numpy(), err_msg=name)
    got = session.run(None, {"b": np.zeros((0, 4), np.float32), "s": np.zeros(0, np.float32),
                             "l": np.zeros(0, np.int64)})[0]
    assert got.shape == (0,)
