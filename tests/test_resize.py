"""detection/ops/resize.py: the one resize, against its references (py-faster-rcnn's rule, torchvision's transform)."""
import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from detection.ops.resize import resize_image, resize_scale, resized_size


def _pyfrcnn_scale(h, w, target, max_size):
    """py-faster-rcnn lib/utils/blob.py prep_im_for_blob, transcribed."""
    im_size_min, im_size_max = min(h, w), max(h, w)
    im_scale = float(target) / float(im_size_min)
    if np.round(im_scale * im_size_max) > max_size:
        im_scale = float(max_size) / float(im_size_max)
    return im_scale


@pytest.mark.parametrize("hw", [(375, 500), (100, 1000), (800, 400), (333, 334), (601, 1999)])
def test_py_faster_rcnn_rule_matches_prep_im_for_blob_and_cv2_sizes(hw):
    h, w = hw
    scale = resize_scale(h, w, 600, 1000, "py-faster-rcnn")
    assert scale == _pyfrcnn_scale(h, w, 600, 1000)
    out = cv2.resize(np.zeros((h, w, 3), np.uint8), None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    assert resized_size(h, w, scale, "py-faster-rcnn") == out.shape[:2]


def test_rules_differ_where_the_cap_binds():
    assert resize_scale(375, 500, 600, 1000) == pytest.approx(1.6)
    assert resize_scale(100, 1000, 600, 1000) == pytest.approx(1.0)  # longest side capped
    assert resize_scale(800, 400, 600, 0) == pytest.approx(1.5)  # no cap
    # 1999 * 600/1199 = 1000.33 rounds to 1000 (allowed by py-faster-rcnn); torchvision's min() caps at 1000/1999
    assert resize_scale(1199, 1999, 600, 1000, "py-faster-rcnn") == 600 / 1199
    assert resize_scale(1199, 1999, 600, 1000, "torchvision") == pytest.approx(1000 / 1999, rel=1e-6)
    with pytest.raises(ValueError, match="resize rule"):
        resize_scale(10, 10, 5, 5, "detectron")


@pytest.mark.parametrize("hw", [(480, 640), (451, 300), (240, 320), (1000, 1500), (37, 911)])
def test_torchvision_rule_reproduces_generalized_rcnn_transform_bit_for_bit(hw):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    torch.manual_seed(0)
    image = torch.rand(3, *hw)
    tv = GeneralizedRCNNTransform(800, 1333, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]).eval()
    expected, _ = tv.resize(image, None)
    scale = resize_scale(hw[0], hw[1], 800, 1333, "torchvision")
    size = resized_size(hw[0], hw[1], scale, "torchvision")
    assert size == tuple(expected.shape[-2:])
    assert torch.equal(resize_image(image, size), expected)


def test_resize_image_is_bilinear_half_pixel_and_identity_at_same_size():
    image = torch.rand(3, 4, 6)
    assert resize_image(image, (4, 6)) is image
    up = resize_image(image, (8, 12))
    # half-pixel bilinear: output pixel (1, 1) samples input (0.25, 0.25) -> clamped border value
    assert up.shape == (3, 8, 12)
    assert torch.allclose(up[:, 0, 0], image[:, 0, 0])
    mid = 0.25 * (image[:, 1, 1] + image[:, 1, 2] + image[:, 2, 1] + image[:, 2, 2])
    assert torch.allclose(up[:, 3:5, 3:5].mean(dim=(1, 2)), mid, atol=1e-6)
    assert resized_size(10, 20, 1.0) == (10, 20) and resized_size(1, 500, 0.001) == (1, 1)
    assert math.isclose(resize_scale(10, 20, 20, 0, "torchvision"), 2.0)


def _python_rule(h, w, min_size, max_size, rule):
    """The rules in Python floats (py-faster-rcnn's prep_im_for_blob + cv2 sizes; torchvision's transform)."""
    short, long = min(h, w), max(h, w)
    scale = min_size / short
    if rule == "torchvision":
        scale = min(scale, max_size / long)
        size = (max(math.floor(h * scale), 1), max(math.floor(w * scale), 1))
    else:
        if round(long * scale) > max_size:
            scale = max_size / long
        size = (max(round(h * scale), 1), max(round(w * scale), 1))
    return (h, w) if scale == 1.0 else size, scale


@pytest.mark.parametrize("rule", ["py-faster-rcnn", "torchvision"])
def test_resize_size_is_the_python_rule_for_every_size_eager_and_in_onnx(rule, tmp_path):
    """The one resize rule (float64 tensors, also what an exported graph computes) equals the Python-float
    arithmetic of the references on 2,000 sizes, ties of round() and the cap's boundary among them."""
    from detection.ops.resize import resize_size

    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 3000, (2000, 2), generator=g).tolist() + [[375, 500], [40, 500], [1199, 1999],
                                                                        [600, 1000], [1, 1], [800, 1333]]
    for min_size, max_size in [(600, 1000), (800, 1333), (128, 160)]:
        for h, w in sizes:
            new, scale = resize_size(torch.tensor([h, w]), min_size, max_size, rule)
            assert (tuple(new.tolist()), scale.item()) == _python_rule(h, w, min_size, max_size, rule), (h, w)
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime==1.32.0 (requirements.txt)")

    class Sizes(torch.nn.Module):
        def forward(self, image):
            from detection.ops.shapes import shape
            return resize_size(shape(image, (1, 2)), 800, 1333, rule)[0]

    path = str(tmp_path / "sizes.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer warnings
        torch.onnx.export(Sizes(), (torch.zeros(1, 30, 40),), path, dynamo=False, input_names=["image"],
                          dynamic_axes={"image": {1: "h", 2: "w"}})
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for h, w in sizes[:300:7] + [[40, 500], [1199, 1999], [375, 500]]:
        got = session.run(None, {"image": np.zeros((1, h, w), np.float32)})[0].tolist()
        assert tuple(got) == _python_rule(h, w, 800, 1333, rule)[0], (h, w)

