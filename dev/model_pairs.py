"""The model pairs the benchmarks time: ours and torchvision's FasterRCNN with the same weights and settings.

`build_pair(make_config(backbone, h, w))`: our C4 detector and torchvision's FasterRCNN built from copies of its
trunk, per-RoI head, RPN and predictor (py-faster-rcnn's proposal counts, one anchor level). `build_fpn_pair(h, w)`:
configs/faster_rcnn_r50_fpn_coco.yaml and torchvision's fasterrcnn_resnet50_fpn as built for its COCO weights,
ours loaded with torchvision's state dict. Random weights: nothing is downloaded. `make_inputs`: seeded images
[3, H, W] in 0..1 and targets with 3 xyxy boxes each.
"""
import copy
import os
import tempfile

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator as TVAnchorGenerator

from detection.config import get_default_config, load_config
from detection.modeling.build import build_model
from harness import ROOT

NUM_CLASSES = 20  # VOC


class _Trunk(nn.Module):
    """torchvision wants `backbone.out_channels`."""

    def __init__(self, trunk: nn.Module, channels: int):
        super().__init__()
        self.body = trunk
        self.out_channels = channels

    def forward(self, x):
        return self.body(x)


def make_config(backbone: str, height: int, width: int):
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.BACKBONE.WEIGHTS = ""
    cfg.MODEL.FREEZE_AT = 0 if backbone == "tiny" else 2
    cfg.TRAIN.SCALES = cfg.TEST.SCALES = (min(height, width),)
    cfg.TRAIN.MAX_SIZE = cfg.TEST.MAX_SIZE = max(height, width)
    return cfg


def build_pair(cfg):
    """Our model from cfg, and torchvision's FasterRCNN with copies of its trunk, head, RPN and predictor."""
    ours = build_model(cfg)
    tr, te = cfg.TRAIN, cfg.TEST
    stride = cfg.FEAT_STRIDE
    sizes = tuple(int(s * stride) for s in cfg.ANCHOR_SCALES)
    heads = ours.roi_heads
    pool = heads.pooler
    tv = TVFasterRCNN(
        _Trunk(copy.deepcopy(ours.backbone), ours.rpn.head.conv.in_channels), num_classes=None,
        min_size=cfg.TEST.SCALES[0], max_size=cfg.TEST.MAX_SIZE,
        image_mean=list(cfg.PIXEL_MEANS), image_std=list(cfg.PIXEL_STDS),
        rpn_anchor_generator=TVAnchorGenerator((sizes,), (tuple(cfg.ANCHOR_RATIOS),)),
        rpn_pre_nms_top_n_train=tr.RPN_PRE_NMS_TOP_N, rpn_pre_nms_top_n_test=te.RPN_PRE_NMS_TOP_N,
        rpn_post_nms_top_n_train=tr.RPN_POST_NMS_TOP_N, rpn_post_nms_top_n_test=te.RPN_POST_NMS_TOP_N,
        rpn_nms_thresh=te.RPN_NMS_THRESH, rpn_fg_iou_thresh=tr.RPN_POSITIVE_OVERLAP,
        rpn_bg_iou_thresh=tr.RPN_NEGATIVE_OVERLAP, rpn_batch_size_per_image=tr.RPN_BATCHSIZE,
        rpn_positive_fraction=tr.RPN_FG_FRACTION,
        box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0"], pool.output_size, pool.sampling_ratio),
        box_head=copy.deepcopy(heads.box_head),
        box_predictor=FastRCNNPredictor(heads.cls_score.in_features, heads.num_classes),
        box_score_thresh=te.SCORE_THRESH, box_nms_thresh=te.NMS, box_detections_per_img=te.DETECTIONS_PER_IMAGE,
        box_fg_iou_thresh=tr.FG_THRESH, box_bg_iou_thresh=tr.BG_THRESH_HI,
        box_batch_size_per_image=tr.BATCH_SIZE, box_positive_fraction=tr.FG_FRACTION)
    with torch.no_grad():  # same RPN and predictor weights -> the same amount of work downstream
        ours_rpn = [ours.rpn.head.conv, ours.rpn.head.cls_logits, ours.rpn.head.bbox_pred]
        tv_rpn = [m for m in tv.rpn.head.modules() if isinstance(m, nn.Conv2d)]
        for a, b in zip(ours_rpn, tv_rpn):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        tv.roi_heads.box_predictor.cls_score.load_state_dict(heads.cls_score.state_dict())
        tv.roi_heads.box_predictor.bbox_pred.load_state_dict(heads.bbox_pred.state_dict())
    return ours, tv


FPN_NAME = "resnet50_fpn"


def build_fpn_pair(height: int, width: int):
    """Ours (configs/faster_rcnn_r50_fpn_coco.yaml) and torchvision's fasterrcnn_resnet50_fpn as built for its COCO
    weights, random init, ours loaded with torchvision's state dict (the same weights)."""
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    from detection.engine.checkpoint import load_model_weights

    side, longest = min(height, width), max(height, width)
    tv = TVFasterRCNN(_resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), 3), 91,
                      min_size=side, max_size=longest)
    cfg = load_config(os.path.join(ROOT, "configs", "faster_rcnn_r50_fpn_coco.yaml"),
                      ["TEST.SCALES", f"[{side}]", "TEST.MAX_SIZE", str(longest), "TRAIN.SCALES", f"[{side}]",
                       "TRAIN.MAX_SIZE", str(longest), "TRAIN.USE_FLIPPED", "False"])
    ours = build_model(cfg, num_classes=91, load_backbone_weights=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tv.pth")
        torch.save(tv.state_dict(), path)
        load_model_weights(ours, path)
    return ours, tv


def make_inputs(n, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, height, width, generator=g) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
        wh = 40 + torch.rand(3, 2, generator=g) * torch.tensor([width * 0.35, height * 0.35])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, NUM_CLASSES + 1, (3,), generator=g)})
    return images, targets
