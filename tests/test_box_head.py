"""MODEL.ROI_HEADS.BOX_HEAD: 'mlp' replaces the backbone's per-RoI stage by two new fully connected layers."""
import torch

from detection.config import get_default_config
from detection.modeling.box_head import MLPBoxHead
from detection.modeling.build import build_model


def test_mlp_box_head_shapes_and_parameters():
    head = MLPBoxHead(96, 7, dim=64)
    assert head(torch.rand(5, 96, 7, 7)).shape == (5, 64)
    assert sum(p.numel() for p in head.parameters()) == 96 * 49 * 64 + 64 + 64 * 64 + 64


def test_faster_rcnn_with_mlp_head_trains_and_drops_the_backbone_stage():
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS = "mobilenet_v2", ""
    cfg.MODEL.ROI_HEADS.BOX_HEAD, cfg.MODEL.ROI_HEADS.MLP_DIM = "mlp", 32
    cfg.DATA.CLASSES = ["a", "b"]
    cfg.POOLING_SIZE = 7
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.roi_heads.box_head, MLPBoxHead)
    assert model.roi_heads.cls_score.in_features == 32 and model.roi_heads.bbox_pred.out_features == 12
    assert not any("features.17" in k for k in model.state_dict())  # MobileNetV2's last stage is not kept
    images = [torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])}]
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert model.roi_heads.box_head.fc6.weight.grad.abs().sum() > 0
    model.eval()
    out = model(images)[0]
    assert out["boxes"].shape[1] == 4 and out["boxes"].shape[0] == out["scores"].shape[0]


def test_detector_trains_and_predicts_under_autocast():
    """Mixed precision (the trainer's SOLVER.AMP uses CUDA autocast; CPU bfloat16 exercises the same casts)."""
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS = "tiny", ""
    cfg.DATA.CLASSES = ["a", "b"]
    cfg.ANCHOR_SCALES = [2, 4]
    cfg.TEST.SCALES, cfg.TEST.SCORE_THRESH = [128], 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    images = [torch.rand(3, 128, 160)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([2])}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["loss_rpn_cls"]) > 0
    sum(losses.values()).backward()
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)[0]
    assert out["boxes"].dtype == torch.float32 and out["boxes"].shape[0] > 0
