"""Bring your torchvision detector: a state dict of torchvision's fasterrcnn_resnet50_fpn / _v2, run through
tools/demo.py with configs/faster_rcnn_r50_fpn_coco.yaml / _v2_coco.yaml, gives torchvision's own detections on
real photos of different sizes (scikit-image's chelsea, coffee, rocket): same classes, boxes within 0.01 px,
scores within 1e-4 (the JSON rounds to 0.01 px and 1e-5; the model path is bit for bit, tests/test_fpn.py).

The torchvision models are seeded random ones (weights=None, weights_backbone=None: nothing downloads), made
to look trained: random BatchNorm statistics, and a classifier layer calibrated on one photo's RoI features so
that it is confident and picks many classes (the 'N/A' ids included: they must not be reported). v1's backbone
uses FrozenBatchNorm2d, as torchvision builds it when weights are given; v2 keeps BatchNorm2d, as torchvision
does. Images are reduced (shortest side 224, longest 352: torchvision's min_size/max_size and TEST.SCALES /
TEST.MAX_SIZE) and so are the RPN's proposals (its *_top_n_test and TEST.RPN_*_TOP_N), on both sides, to keep the
test cheap on a CPU; the torch hub cache is empty, so no ImageNet file is needed.
"""
import json
import os

import cv2
import pytest
import torch
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

import demo as demo_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PHOTOS = ("chelsea", "coffee", "rocket")
MIN_SIZE, MAX_SIZE = 224, 352
PRE_NMS, POST_NMS = 300, 150  # RPN proposals per level before NMS (5 x 300 > 1000: torchvision's per-level NMS
#                               branch, as at full size) and per image after; the box heads dominate the cost
CATEGORIES = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """{name: (path of a lossless PNG, [3, H, W] float tensor)} of the three photos."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in PHOTOS:
        rgb = getattr(data, name)()
        path = str(folder / f"{name}.png")
        cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out[name] = (path, torch.from_numpy(rgb).permute(2, 0, 1).float().div(255))
    return out


def seeded_torchvision_detector(version: str, calibration_image: torch.Tensor):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    ctor = fasterrcnn_resnet50_fpn if version == "v1" else fasterrcnn_resnet50_fpn_v2
    model = ctor(weights=None, weights_backbone=None, min_size=MIN_SIZE, max_size=MAX_SIZE,
                 rpn_pre_nms_top_n_test=PRE_NMS, rpn_post_nms_top_n_test=POST_NMS)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 0.9), m.bias.uniform_(-0.1, 0.1)
    if version == "v1":
        from detection.modeling.backbone import convert_frozen_batchnorm  # -> torchvision's FrozenBatchNorm2d

        convert_frozen_batchnorm(model.backbone.body)
    model.eval()
    with torch.no_grad():  # confident, varied class scores: logits = W (x - mean) / std over one photo's RoIs
        images, _ = model.transform([calibration_image])
        feats = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, feats)
        x = model.roi_heads.box_head(model.roi_heads.box_roi_pool(feats, proposals, images.image_sizes))
        predictor = model.roi_heads.box_predictor
        w = torch.randn_like(predictor.cls_score.weight) * 3 / (x.std(0) + 1e-3) / x.shape[1] ** 0.5
        predictor.cls_score.weight.copy_(w)
        predictor.cls_score.bias.copy_(-(w @ x.mean(0)))
    return model


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_demo_with_a_torchvision_state_dict_gives_torchvision_detections(version, photos, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no resnet50-*.pth anywhere
    model = seeded_torchvision_detector(version, photos["chelsea"][1])
    weights = str(tmp_path / f"fasterrcnn_{version}.pth")
    torch.save(model.state_dict(), weights)
    with torch.no_grad():
        expected = {name: model([image])[0] for name, (_, image) in photos.items()}
    cfg = os.path.join(ROOT, "configs", f"faster_rcnn_r50_fpn{'' if version == 'v1' else '_v2'}_coco.yaml")
    out = tmp_path / "demo"
    rc = demo_tool.main(["--cfg", cfg, "--weights", weights, "--input", *(p for p, _ in photos.values()),
                         "--output", str(out), "--score-thresh", "0", "--device", "cpu",
                         "--set", "TEST.SCALES", f"[{MIN_SIZE}]", "TEST.MAX_SIZE", str(MAX_SIZE),
                         "TEST.RPN_PRE_NMS_TOP_N", str(PRE_NMS), "TEST.RPN_POST_NMS_TOP_N", str(POST_NMS)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "detections.json").read_text())
    assert len(report["class_names"]) == 90 and report["class_names"][:2] == ["person", "bicycle"]
    placeholders_seen = 0
    for entry in report["images"]:
        name = os.path.splitext(os.path.basename(entry["file"]))[0]
        tv = expected[name]
        real = torch.tensor([CATEGORIES[int(lab)] != "N/A" for lab in tv["labels"]], dtype=torch.bool)
        placeholders_seen += int((~real).sum())
        dets = entry["detections"]
        assert len(dets) == int(real.sum()) > 10, name
        assert [d["class"] for d in dets] == [CATEGORIES[int(lab)] for lab in tv["labels"][real]], name
        assert [d["label"] for d in dets] == tv["labels"][real].tolist()
        boxes = torch.tensor([d["box_xyxy"] for d in dets])
        scores = torch.tensor([d["score"] for d in dets])
        assert (boxes - tv["boxes"][real]).abs().max() <= 0.01, name
        assert (scores - tv["scores"][real]).abs().max() <= 1e-4, name
        assert len({d["class"] for d in dets}) > 1 and scores.min() < 0.9  # varied, not saturated
    assert placeholders_seen > 0  # torchvision reported some 'N/A' ids: they were dropped here


def test_torchvision_file_names_are_found_in_the_hub_cache_and_hash_checked(tmp_path, monkeypatch, capsys):
    from detection.modeling.backbone.weights import WeightsError, WeightsNotFoundError
    from detection.modeling.torchvision_detectors import resolve_detector_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"):
        resolve_detector_weights("fasterrcnn_resnet50_fpn_coco")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    bad = cache / "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="hash mismatch"):
        resolve_detector_weights("fasterrcnn_resnet50_fpn_v2_coco")
    assert resolve_detector_weights(str(tmp_path / "nothing.pth")) is None
    cfg = os.path.join(ROOT, "configs", "faster_rcnn_r50_fpn_coco.yaml")
    image = str(tmp_path / "one.png")
    cv2.imwrite(image, cv2.UMat(8, 8, cv2.CV_8UC3).get() * 0)
    rc = demo_tool.main(["--cfg", cfg, "--weights", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", "--input",
                         image, "--device", "cpu"])
    assert rc == 2 and "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth not found" in capsys.readouterr().err
