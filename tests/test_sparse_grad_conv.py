"""The RPN head's convolution with a backward pass over the active positions only (detection/ops/
sparse_grad_conv.py): the dense convolution's gradients (float64 to rounding), its forward bit for bit, and the same
training gradients in a detector."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detection.ops.sparse_grad_conv import SparseGradConv2d, conv2d_sparse_grad


def _sparse_grad(shape, positions, seed=0):
    g = torch.zeros(shape, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    for n, y, x in positions:
        g[n, :, y, x] = torch.randn(shape[1], dtype=torch.float64, generator=gen)
    return g


@pytest.mark.parametrize("kernel, padding", [((3, 3), (1, 1)), ((1, 1), (0, 0)), ((5, 3), (2, 1)), ((3, 3), (0, 0))])
def test_sparse_backward_equals_the_dense_one(kernel, padding):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 17, 19, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(7, 5, *kernel, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, generator=gen, requires_grad=True)
    y = conv2d_sparse_grad(x, w, b, padding)
    ref = F.conv2d(x, w, b, padding=padding)
    assert torch.equal(y, ref)
    ho, wo = ref.shape[2:]
    g = _sparse_grad(ref.shape, [(0, 0, 0), (1, ho - 1, wo - 1), (1, 4, 5), (0, 4, 5), (0, 5, 5)])  # corners too
    got = torch.autograd.grad(y, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, e, name in zip(got, want, ("input", "weight", "bias")):
        assert (a - e).abs().max().item() < 1e-12, name


def test_dense_gradients_take_the_dense_backward():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, generator=gen, requires_grad=True)
    g = torch.randn(1, 6, 8, 8, generator=gen)
    got = torch.autograd.grad(conv2d_sparse_grad(x, w, None), (x, w), g)
    want = torch.autograd.grad(F.conv2d(x, w, None, padding=1), (x, w), g)
    assert all(torch.equal(a, e) for a, e in zip(got, want))


def test_only_the_needed_gradients_are_computed():
    x = torch.randn(1, 3, 6, 6)  # no gradient for the input
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = conv2d_sparse_grad(x, w, None)
    (gw,) = torch.autograd.grad(y, (w,), _sparse_grad(y.shape, [(0, 2, 2)]).float())
    (ref,) = torch.autograd.grad(F.conv2d(x, w, None, padding=1), (w,), _sparse_grad(y.shape, [(0, 2, 2)]).float())
    torch.testing.assert_close(gw, ref)


def test_module_is_a_conv2d_with_its_forward_and_state_dict():
    torch.manual_seed(0)
    conv = SparseGradConv2d(8, 16, 3, padding=1)
    plain = nn.Conv2d(8, 16, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    assert isinstance(conv, nn.Conv2d) and set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        assert torch.equal(conv.eval()(x), plain(x))
    y = conv.train()(x.requires_grad_())
    assert torch.equal(y, plain(x)) and type(y.grad_fn).__name__ == "_SparseGradConv2dBackward"
    with pytest.raises(ValueError, match="stride 1"):
        SparseGradConv2d(8, 16, 3, stride=2, padding=1)


def test_detector_training_gradients_match_the_dense_rpn_conv(monkeypatch):
    """One training step of a detector: the same losses as with a plain nn.Conv2d RPN conv (the forward is
    unchanged) and the same gradients everywhere up to float summation order. 16 sampled anchors on 20x24 maps:
    the sparse backward runs (counted)."""
    from detection.modeling.build import build_model
    from detection.ops import sparse_grad_conv
    from model_fixtures import tiny_config

    torch.manual_seed(0)
    sparse = build_model(tiny_config(["TRAIN.RPN_BATCHSIZE", "16", "TRAIN.SCALES", "[320]", "TRAIN.MAX_SIZE",
                                      "384"])).train()
    assert isinstance(sparse.rpn.head.conv, SparseGradConv2d)
    dense = copy.deepcopy(sparse)
    dense.rpn.head.conv.__class__ = nn.Conv2d
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 320, 384, generator=gen), torch.rand(3, 300, 360, generator=gen)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0], [80.0, 30.0, 150.0, 100.0]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]]), "labels": torch.tensor([3])}]
    grads, calls = [], []
    original = sparse_grad_conv._dense_backward
    monkeypatch.setattr(sparse_grad_conv, "_dense_backward", lambda *a: calls.append(1) or original(*a))
    for model in (sparse, dense):
        torch.manual_seed(7)
        losses = model(images, targets)
        model.zero_grad()
        sum(losses.values()).backward()
        grads.append(({k: float(v.detach()) for k, v in losses.items()},
                      {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert not calls  # the sparse path ran, not the dense fallback
    (loss_s, grad_s), (loss_d, grad_d) = grads
    assert loss_s == loss_d and set(grad_s) == set(grad_d) and "rpn.head.conv.weight" in grad_s
    for name in grad_s:
        torch.testing.assert_close(grad_s[name], grad_d[name], rtol=1e-4, atol=1e-6, msg=name)
