"""detection/ops/resize.py: the one resize, against its references (py-faster-rcnn's rule, torchvision's transform)."""
import math

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
