"""detection.ops as a drop-in for torchvision.ops on the CPU, where torchvision's own op tests found it wanting.

float16 RoI ops, box_iou / box_area upcasting, fake kernels checked with torch.library.opcheck (dynamic-shape
AOT dispatch included) and a fullgraph torch.compile training step, TorchScript, torch.fx, exception types that both
kinds of caller catch, quantized tensors, and torchvision's MultiScaleRoIAlign running on our roi_align.
(torchvision's test/test_ops.py itself was run against these ops: docs/architecture.md has the tally.)
"""
import pytest
import torch
import torchvision

from detection import ops

pytestmark = pytest.mark.skipif(ops.BACKEND != "compiled", reason="tests the compiled ops (DETECTION_OPS is set)")

_C = torch.ops.detection
ROIS = torch.tensor([[0, 0.0, 0.0, 9.0, 9.0], [0, 0.0, 5.0, 4.0, 9.0], [1, 5.3, 5.1, 9.0, 9.0], [1, -2.0, 3.0, 14.0, 7.5]])


def feature_map(dtype=torch.float32, shape=(2, 6, 10, 11), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------------------------- float16 on the CPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("aligned", [False, True])
def test_reduced_precision_roi_align_is_float32_arithmetic_rounded_once(dtype, aligned):
    x, rois = feature_map(dtype), ROIS.to(dtype)
    xr = x.clone().requires_grad_()
    out = ops.roi_align(xr, rois, 3, 0.5, -1, aligned)
    assert out.dtype == dtype
    x32 = x.float().requires_grad_()
    ref = ops.roi_align(x32, rois.float(), 3, 0.5, -1, aligned)
    assert torch.equal(out, ref.to(dtype))
    g = torch.rand(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    out.backward(g)
    ref.backward(g.float())
    assert xr.grad.dtype == dtype and torch.equal(xr.grad, x32.grad.to(dtype))
    if dtype == torch.float16:  # torchvision computes in float16 step by step: within its own half tolerance
        tv = torchvision.ops.roi_align(x, rois, 3, 0.5, -1, aligned)
        torch.testing.assert_close(out, tv, rtol=4e-3, atol=4e-3)
    nhwc = ops.roi_align(x.contiguous(memory_format=torch.channels_last), rois, 3, 0.5, -1, aligned)
    assert torch.equal(nhwc, out) and nhwc.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_roi_pool_and_nms(dtype):
    x, rois = feature_map(dtype), ROIS.to(dtype)
    xr = x.clone().requires_grad_()
    out = ops.roi_pool(xr, rois, (3, 2), 0.5)
    ref, argmax = _C.roi_pool(x.float(), rois.float(), 0.5, 3, 2)
    assert out.dtype == dtype and torch.equal(out, ref.to(dtype))  # maxima are exact
    assert torch.equal(_C.roi_pool(x, rois, 0.5, 3, 2)[1], argmax)
    out.sum().backward()
    x32 = x.float().requires_grad_()
    ops.roi_pool(x32, rois.float(), (3, 2), 0.5).sum().backward()
    assert torch.equal(xr.grad, x32.grad.to(dtype))
    if dtype == torch.float16:
        assert torch.equal(out, torchvision.ops.roi_pool(x, rois, (3, 2), 0.5))
    boxes = torch.tensor([[285.3538, 185.5758, 1193.5110, 851.4551], [285.1472, 188.7374, 1192.4984, 851.0669],
                          [279.2440, 197.9812, 1189.4746, 849.2019]])  # torchvision's test_nms_float16
    scores = torch.tensor([0.6370, 0.7569, 0.3966])
    assert torch.equal(ops.nms(boxes.to(dtype), scores.to(dtype), 0.2), ops.nms(boxes, scores, 0.2))
    assert torch.equal(ops.nms(boxes.to(dtype), scores.to(dtype), 0.2),
                       ops.nms(boxes.to(dtype).float(), scores.to(dtype).float(), 0.2))


# --------------------------------------------------------------------------------------------- box_iou / box_area
def test_box_ops_upcast_like_torchvision():
    big = torch.tensor([[0, 0, 300, 300], [0, 0, 290, 300], [10, 10, 400, 400]], dtype=torch.float16)  # areas > 65504
    for a, b in [(big, big), (big[:2], big[1:])]:
        assert torch.equal(ops.box_iou(a, b), torchvision.ops.box_iou(a, b))
    assert not ops.box_iou(big, big).isnan().any() and ops.box_iou(big, big).dtype == torch.float32
    assert torch.equal(ops.box_area(big), torchvision.ops.box_area(big)) and ops.box_area(big)[0] == 90000
    i16 = torch.tensor([[0, 0, 200, 200]], dtype=torch.int16), torch.tensor([[0, 0, 100, 200]], dtype=torch.int16)
    assert ops.box_iou(*i16).item() == 0.5 == torchvision.ops.box_iou(*i16).item()
    i8 = torch.tensor([[0, 0, 100, 100], [0, 0, 0, 0]], dtype=torch.int8)
    assert ops.box_area(i8).tolist() == [10000, 0] and ops.box_area(i8).dtype == torch.int32
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.int32, torch.int64):  # unchanged: torchvision's, bit for bit
        xy = torch.rand(40, 2, generator=g) * 100
        boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 50], 1).to(dtype)
        assert torch.equal(ops.box_iou(boxes[:25], boxes[10:]), torchvision.ops.box_iou(boxes[:25], boxes[10:]))
        assert torch.equal(ops.box_area(boxes), torchvision.ops.box_area(boxes))
    batched = ops.box_iou(big.float()[None].expand(2, 3, 4), big.float()[None, :2].expand(2, 2, 4))
    assert batched.shape == (2, 3, 2) and torch.equal(batched[1], ops.box_iou(big.float(), big.float()[:2]))


# ------------------------------------------------------------------------------------ fake kernels and torch.compile
def _nms_inputs(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1), torch.rand(n, generator=g)


def _opcheck(op, args):
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                                "test_aot_dispatch_dynamic"))


def test_opcheck_every_op():
    x = feature_map(torch.float64).requires_grad_()
    rois = ROIS.double()
    _opcheck(_C.roi_align.default, (x, rois, 0.5, 3, 2, 2, True))
    _opcheck(_C.roi_align.default, (x.contiguous(memory_format=torch.channels_last), rois, 0.5, 3, 2, -1, False))
    _opcheck(_C.roi_pool.default, (x, rois, 0.5, 3, 2))
    grad = torch.rand(4, 6, 3, 2, dtype=torch.float64)
    _opcheck(_C._roi_align_backward.default, (grad, rois, 0.5, 3, 2, 2, 6, 10, 11, 2, True))
    _, argmax = _C.roi_pool(x.detach(), rois, 0.5, 3, 2)
    _opcheck(_C._roi_pool_backward.default, (grad, rois, argmax, 0.5, 3, 2, 2, 6, 10, 11))
    boxes, scores = _nms_inputs()
    _opcheck(_C.nms.default, (boxes, scores, 0.5))
    _opcheck(_C.batched_nms.default, (boxes, scores, torch.arange(40) % 3, 0.5))
    _opcheck(_C.soft_nms.default, (boxes, scores, torch.arange(40) % 3, 2, 0.3, 0.5, 0.001))
    _opcheck(_C._winograd_f4x3_input.default, (feature_map(shape=(1, 3, 9, 7)), 0, 4))


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_fullgraph_compile_of_a_training_step(op):
    """A conv -> RoI op -> linear training step compiles with fullgraph=True (no graph break at the op; AOT autograd
    traces the backward graph through the backward ops' fake kernels) and gives the eager loss and gradients.
    aot_eager is that tracing without the C++ code generation of inductor (slow on this CPU)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    head = torch.nn.Linear(4 * 3 * 3, 2)
    pool = ops.RoIAlign(3, 0.5, 2, True) if op == "roi_align" else ops.RoIPool(3, 0.5)
    x = torch.rand(2, 3, 16, 16)
    rois = [torch.tensor([[1.0, 2.0, 20.0, 25.0], [0.0, 0.0, 31.0, 31.0]]), torch.tensor([[5.0, 4.0, 18.0, 30.0]])]

    def loss_fn(x, rois):
        return head(pool(conv(x), rois).flatten(1)).square().mean()

    eager = loss_fn(x, rois)
    eager.backward()
    grads = [p.grad.clone() for p in (*conv.parameters(), *head.parameters())]
    for p in (*conv.parameters(), *head.parameters()):
        p.grad = None
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager", dynamic=True)(x, rois)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for p, g in zip((*conv.parameters(), *head.parameters()), grads):
        torch.testing.assert_close(p.grad, g)


# ------------------------------------------------------------------------------------------- TorchScript, torch.fx
def test_torchscript():
    x, boxes = feature_map(), [ROIS[ROIS[:, 0] == i, 1:] for i in range(2)]
    for fn, args in [(ops.roi_align, (x, ROIS, 3, 0.5, 2, True)), (ops.roi_align, (x, boxes, [3, 2])),
                     (ops.roi_pool, (x, ROIS, 3, 0.5)), (ops.roi_pool, (x, boxes, (2, 3)))]:
        assert torch.equal(torch.jit.script(fn)(*args), fn(*args))
    for module in (ops.RoIAlign(3, 0.5, -1), ops.RoIPool(3, 1.0), ops.RoIAlign((3, 2), 1.0, 2, True)):
        scripted = torch.jit.script(module)
        assert torch.equal(scripted(x, ROIS), module(x, ROIS)) and torch.equal(scripted(x, boxes), module(x, boxes))
    b, s = _nms_inputs()
    idxs = torch.arange(40) % 3
    assert torch.equal(torch.jit.script(ops.nms)(b, s, 0.5), ops.nms(b, s, 0.5))
    assert torch.equal(torch.jit.script(ops.batched_nms)(b, s, idxs, 0.5), ops.batched_nms(b, s, idxs, 0.5))
    for fn, args in [(ops.soft_nms, (b, s, "gaussian", 0.3, 0.5, 0.001)),
                     (ops.batched_soft_nms, (b, s, idxs, "linear", 0.3, 0.5, 0.001)),
                     (ops.soft_nms, (b, s, "hard", 0.5, 0.5, 0.0))]:
        assert all(torch.equal(u, v) for u, v in zip(torch.jit.script(fn)(*args), fn(*args)))
    assert torch.equal(torch.jit.script(ops.box_iou)(b, b), ops.box_iou(b, b))
    assert torch.equal(torch.jit.script(ops.box_area)(b), ops.box_area(b))
    with pytest.raises(torch.jit.Error, match=r"boxes as a Tensor must be \[K, 5\]"):
        torch.jit.script(ops.roi_align)(x, ROIS[:, 1:], 3)


def test_torch_fx():
    from torchvision.models.feature_extraction import get_graph_node_names

    x = feature_map()
    for module in (ops.RoIAlign(5, 1.0, -1), ops.RoIPool(3, 0.5)):
        traced = torch.fx.symbolic_trace(module)
        calls = [n for n in traced.graph.nodes if n.op == "call_function"]
        assert len(calls) == 1  # the op is a leaf of the trace (torch.fx.wrap)
        assert torch.equal(traced(x, ROIS), module(x, ROIS))

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = ops.RoIAlign(3, 1.0, 2)

        def forward(self, a, b):
            return self.layer(a, b)

    train, evaluation = get_graph_node_names(Wrapper())
    assert train == evaluation and len(train) == 3  # a, b and one node for the op


# ----------------------------------------------------------------------------------------------------- exceptions
@pytest.mark.parametrize("fn", [ops.roi_align, ops.roi_pool])
def test_exceptions_are_caught_by_torchvision_style_and_our_style_callers(fn):
    x = feature_map()
    for bad in (ROIS[:, 1:], [ROIS[:, :3]]):
        for expected in (AssertionError, ValueError, ops.BoxShapeError):  # torchvision raises AssertionError
            with pytest.raises(expected, match=r"\[K, 5\]|\[L, 4\]"):
                fn(x, bad, 2)
    for expected in (AssertionError, TypeError):
        with pytest.raises(expected, match="Tensor"):
            fn(x, "boxes", 2)
    for expected in (RuntimeError, TypeError):  # torchvision's kernel raises RuntimeError for mixed dtypes
        with pytest.raises(expected, match="dtype"):
            fn(x, ROIS.double(), 2)
    for expected in (RuntimeError, ValueError):
        with pytest.raises(expected, match=r"\[B, C, H, W\]"):
            fn(x[0], ROIS, 2)


# ------------------------------------------------------------------------------------------------------ quantized
@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8, torch.qint32])
def test_quantized_tensors_are_the_float_op_on_the_dequantized_values(qdtype):
    boxes, scores = _nms_inputs(200, 3)
    qb = torch.quantize_per_tensor(boxes, 0.5, 10, qdtype)
    qs = torch.quantize_per_tensor(scores * 100, 1.0, 0, qdtype)
    assert torch.equal(ops.nms(qb, qs, 0.5), ops.nms(qb.dequantize(), qs.dequantize(), 0.5))
    idxs = torch.arange(200) % 4
    assert torch.equal(ops.batched_nms(qb, qs, idxs, 0.5), ops.batched_nms(qb.dequantize(), qs.dequantize(), idxs, 0.5))
    x = torch.quantize_per_tensor(feature_map() * 50, 0.25, 3, qdtype)
    rois = torch.quantize_per_tensor(ROIS.clamp(min=0), 0.5, 0, qdtype)
    for fn in (lambda t, r: ops.roi_align(t, r, 3, 0.5, 2, True), lambda t, r: ops.roi_pool(t, r, 3, 0.5)):
        q = fn(x, rois)
        assert q.is_quantized and q.dtype == qdtype and q.q_scale() == 0.25 and q.q_zero_point() == 3
        expected = torch.quantize_per_tensor(fn(x.dequantize(), rois.dequantize()), 0.25, 3, qdtype)
        assert torch.equal(q.int_repr(), expected.int_repr())
    assert torch.equal(torchvision.ops.nms(qb, qs, 0.5), ops.nms(qb, qs, 0.5))  # torchvision's quantized kernel


# ------------------------------------------------------------------------------------ torchvision's pooler, batched
def test_torchvision_multiscale_roi_align_over_our_roi_align(monkeypatch):
    from torchvision.ops import poolers

    features = {"0": feature_map(shape=(2, 4, 32, 32), seed=1), "1": feature_map(shape=(2, 4, 16, 16), seed=2)}
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0], [0.0, 0.0, 120.0, 100.0]]), torch.tensor([[10.0, 10.0, 20.0, 80.0]])]
    pooler = poolers.MultiScaleRoIAlign(["0", "1"], 3, 2)
    expected = pooler(features, boxes, [(128, 128), (128, 128)])
    monkeypatch.setattr(poolers, "roi_align", ops.roi_align)
    assert torch.equal(pooler(features, boxes, [(128, 128), (128, 128)]), expected)


def test_batched_nms_of_no_boxes_needs_no_other_argument():
    empty = torch.empty((0,), dtype=torch.int64)
    assert torch.equal(ops.batched_nms(torch.empty((0, 4)), None, None, None), empty)  # as torchvision's
