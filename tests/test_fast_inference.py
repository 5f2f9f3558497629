"""The fast inference path: BatchNorm folding is exact on torchvision's blocks, and the quick-start detector's
detections with fast=True equal the eager model's (boxes within 0.01 px, scores within 1e-4, CPU float32)."""
import copy
import os

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import detection
from detection.export import compare_detections, fold_batchnorm, optimize_for_inference
from detection.export.fold_bn import is_foldable_bn
from detection.modeling.backbone import convert_frozen_batchnorm
from detection.ops.winograd import WinogradConv2d
from model_fixtures import (QUICKSTART_CLASSES, build_seeded, make_confident, quickstart_config, tiny_config,
                            tiny_fpn_config, write_run_folder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomise_batchnorm(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("name, frozen", [("resnet18", True), ("resnet50", False), ("mobilenet_v2", True)])
def test_folding_batchnorm_into_convs_keeps_the_outputs(name, frozen):
    torch.manual_seed(0)
    model = _randomise_batchnorm(getattr(torchvision.models, name)(weights=None)).eval()
    if frozen:
        convert_frozen_batchnorm(model)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        n = fold_batchnorm(model)
        out = model(x)
    assert n == sum(isinstance(m, nn.Conv2d) for m in model.modules())  # every conv had its BatchNorm
    assert not any(is_foldable_bn(m) for m in model.modules())
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_packed_convolutions_equal_the_channels_last_conv_for_every_input_size():
    from detection.export.fast import PackedConv2d

    torch.manual_seed(0)
    for k, stride, groups in [(3, 1, 1), (1, 2, 1), (3, 2, 16), (7, 2, 1)]:
        conv = nn.Conv2d(16, 32 if groups == 1 else 16, k, stride, k // 2, groups=groups).eval()
        conv.to(memory_format=torch.channels_last)
        packed = PackedConv2d(conv)
        with torch.no_grad():
            for shape in [(1, 16, 40, 50), (5, 16, 17, 93), (0, 16, 14, 14)]:  # packed on the first, then reused
                x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
                assert torch.equal(packed(x), conv(x)), (k, stride, groups, shape)


def test_a_training_batchnorm_is_not_folded():
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(block) == 0 and isinstance(block[1], nn.BatchNorm2d)


def assert_fast_matches_eager(model, fast, sizes, seed):
    """fast's detections equal model's (compare_detections' bounds) on random images of each (h, w) in `sizes`,
    and there are some."""
    for h, w in sizes:
        img = torch.rand((3, h, w), generator=torch.Generator().manual_seed(seed(h, w)))
        with torch.no_grad():
            ref = model([img])[0]
        with torch.inference_mode():
            got = fast([img])[0]
        c = compare_detections(ref, got)
        assert c.ok and c.count_reference > 0, f"{h}x{w}: {c}"


@pytest.fixture(scope="module")
def quickstart():
    return build_seeded(quickstart_config())


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_quickstart_detections_equal_eager(quickstart, channels_last):
    fast = optimize_for_inference(copy.deepcopy(quickstart), channels_last=channels_last)
    assert fast._fast_inference["folded"] > 30
    n_convs = sum(isinstance(m, nn.Conv2d) for m in quickstart.modules())  # MobileNetV2 trunk + RPN head
    assert fast._fast_inference["winograd"] == 1  # the RPN head's 3x3 (the trunk's are depthwise or strided)
    assert isinstance(fast.rpn.head.conv, WinogradConv2d)
    assert fast._fast_inference["packed"] == (n_convs - 1 if channels_last else 0)
    assert_fast_matches_eager(quickstart, fast, [(240, 320), (400, 220), (60, 700)], lambda h, w: h + w)


def test_load_fast_and_the_tools_fast_flag(quickstart, tmp_path):
    run = write_run_folder(str(tmp_path / "qs"), quickstart_config(), quickstart, QUICKSTART_CLASSES)
    eager, fast = detection.load(run), detection.load(run, fast=True)
    assert fast.fast and fast.model._fast_inference["folded"] > 30 and not eager.fast
    img = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    a, b = eager(img), fast(img)
    assert compare_detections(a.output, b.output).ok and len(a) > 0

    import cv2

    import demo as demo_tool

    tiny = write_run_folder(str(tmp_path / "tiny"), tiny_config(), build_seeded(tiny_config()), QUICKSTART_CLASSES)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    assert demo_tool.main(["--cfg", os.path.join(tiny, "config.yaml"), "--input", str(tmp_path / "a.png"),
                           "--output", str(tmp_path / "demo"), "--fast"]) == 0
    assert (tmp_path / "demo" / "a.jpg").is_file()


def test_winograd_goes_after_the_trunk_unless_asked_everywhere():
    """R50-FPN: "heads" (the default) turns the 4 FPN output convs and the RPN head's conv into Winograd
    convolutions and leaves the trunk's 13 eligible 3x3 convs to oneDNN; "all" takes those too; "none" none."""
    from detection.config import load_config
    from detection.modeling.build import build_model

    cfg = load_config(os.path.join(ROOT, "configs", "faster_rcnn_r50_fpn_coco.yaml"),
                      ["MODEL.BACKBONE.WEIGHTS", "''", "DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=91).eval()
    counts = {}
    for where in ("heads", "all", "none"):
        fast = optimize_for_inference(copy.deepcopy(model), torch.device("cpu"), winograd=where)
        counts[where] = fast._fast_inference["winograd"]
        if where == "heads":
            assert isinstance(fast.rpn.head.conv, WinogradConv2d)
            assert not any(isinstance(m, WinogradConv2d) for m in fast.backbone.body.modules())
    assert counts == {"heads": 5, "all": 18, "none": 0}
    with pytest.raises(ValueError, match="winograd='some'"):
        optimize_for_inference(copy.deepcopy(model), torch.device("cpu"), winograd="some")


def test_fast_fpn_detections_equal_eager():
    """An FPN detector whose 64-channel pyramid outputs and RPN conv run as Winograd convolutions keeps the eager
    detections within the fast path's bounds."""
    from detection.engine.tasks import get_task

    cfg = tiny_fpn_config(["MODEL.FPN.OUT_CHANNELS", "64"])
    torch.manual_seed(0)
    model = make_confident(get_task(cfg).build_model(cfg)).eval()  # the task resolves the 91 COCO labels
    fast = optimize_for_inference(copy.deepcopy(model))
    assert fast._fast_inference["winograd"] == 4  # P2..P4 outputs + the RPN conv
    assert_fast_matches_eager(model, fast, [(128, 160), (150, 97)], lambda h, w: h * w)
