"""Winograd F(4x4, 3x3) convolution of the fast path (detection/ops/winograd.py, csrc/cpu/winograd_kernel.cpp)
against torch's direct convolution: exact algebra in float64, float32 within a few times the direct error."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import detection.ops  # noqa: F401  (registers torch.ops.detection.*)
from detection.ops import winograd
from detection.ops.winograd import WinogradConv2d, winograd_conv2d, winograd_eligible, winograd_weight

pytestmark = pytest.mark.skipif(detection.ops._backend.USE_TORCHVISION,
                                reason="the Winograd transforms are compiled ops (DETECTION_OPS=torchvision)")


@pytest.mark.parametrize("shape", [(1, 3, 4, 4, 2), (2, 5, 9, 11, 7), (3, 8, 1, 1, 4), (1, 4, 5, 13, 3),
                                   (2, 6, 7, 7, 6)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_float64_equals_direct_convolution(shape, with_bias, layout):
    n, c, h, w, k = shape
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
    weight = torch.randn(k, c, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.randn(k, dtype=torch.float64, generator=g) if with_bias else None
    want = F.conv2d(x, weight, bias, padding=1)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
    got = winograd_conv2d(x, winograd_weight(weight), bias)
    assert got.shape == want.shape
    if layout == "nhwc" and c > 1 and h * w > 1:  # the output keeps a channels_last input's layout
        assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    else:
        assert got.is_contiguous()
    assert (got - want).abs().max().item() < 1e-11


def test_relu_is_applied_after_the_bias():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, 9, dtype=torch.float64, generator=g)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.randn(5, dtype=torch.float64, generator=g)
    got = winograd_conv2d(x, winograd_weight(weight), bias, relu=True)
    want = F.relu(F.conv2d(x, weight, bias, padding=1))
    assert (got - want).abs().max().item() < 1e-11 and (got == 0).any()


def test_blocks_of_tiles_cover_the_image(monkeypatch):
    """A small tile block: every tile is transformed, multiplied and written exactly once, across images too."""
    monkeypatch.setattr(winograd, "tiles_per_block", lambda channels: 5)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 10, 15, dtype=torch.float64, generator=g)
    weight = torch.randn(4, 6, 3, 3, dtype=torch.float64, generator=g)
    got = winograd_conv2d(x, winograd_weight(weight))
    assert (got - F.conv2d(x, weight, padding=1)).abs().max().item() < 1e-11


def test_float32_error_is_within_a_few_times_the_direct_one():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 23, 30, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(96, 64, 3, 3, generator=g) * (2 / (9 * 64)) ** 0.5
    bias = torch.randn(96, generator=g) * 0.1
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    scale = ref.abs().max().item()
    direct = (F.conv2d(x, weight, bias, padding=1).double() - ref).abs().max().item() / scale
    wino = (winograd_conv2d(x, winograd_weight(weight), bias).double() - ref).abs().max().item() / scale
    assert wino < 5e-5, wino
    assert direct < 5e-6  # the reference itself is sound


def test_module_matches_the_conv_it_replaces_and_keeps_its_parameters():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    fast = WinogradConv2d(conv)
    assert fast.weight is conv.weight and fast.bias is conv.bias
    assert "transformed_weight" not in fast.state_dict()
    x = torch.randn(1, 64, 17, 12)
    with torch.no_grad():
        assert torch.allclose(fast(x), conv(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="32 channels, expected 64"):
        fast(torch.randn(1, 32, 8, 8))


@pytest.mark.parametrize("conv, eligible", [
    (nn.Conv2d(64, 64, 3, padding=1), True),
    (nn.Conv2d(64, 128, 3, padding=1, bias=False), True),
    (nn.Conv2d(64, 64, 3, stride=2, padding=1), False),
    (nn.Conv2d(64, 64, 3, padding=2, dilation=2), False),
    (nn.Conv2d(64, 64, 3, padding=0), False),
    (nn.Conv2d(64, 64, 3, padding=1, groups=64), False),
    (nn.Conv2d(64, 64, 1), False),
    (nn.Conv2d(16, 64, 3, padding=1), False),
    (nn.Conv2d(64, 64, 3, padding=1, padding_mode="reflect"), False),
    (nn.Conv2d(64, 64, 3, padding=1).double(), False),
])
def test_eligibility(conv, eligible):
    assert winograd_eligible(conv) is eligible
    if not eligible:
        with pytest.raises(ValueError, match="not a float32 CPU 3x3 conv"):
            WinogradConv2d(conv)


def test_bad_tile_ranges_and_shapes_are_refused():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(RuntimeError, match=r"tiles \[0, 5\) outside \[0, 4\)"):
        torch.ops.detection._winograd_f4x3_input(x, 0, 5)
    out = torch.empty(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="products have 2 channels, out 3"):
        torch.ops.detection._winograd_f4x3_output_(out, torch.zeros(36, 4, 2), None, 0, False)
    with pytest.raises(RuntimeError, match="out must be a channels_last or contiguous"):
        torch.ops.detection._winograd_f4x3_output_(torch.empty(1, 3, 8, 16)[..., ::2], torch.zeros(36, 4, 3), None,
                                                   0, False)


def test_empty_inputs_give_empty_outputs():
    u = winograd_weight(torch.randn(5, 4, 3, 3))
    assert winograd_conv2d(torch.randn(0, 4, 8, 8), u).shape == (0, 5, 8, 8)
    assert winograd_conv2d(torch.randn(2, 4, 0, 8), u).shape == (2, 5, 0, 8)
