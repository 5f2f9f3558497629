"""Faster R-CNN, C4 (one stride-16 trunk map) or FPN (a feature pyramid), the meta-architecture and its builder.

    model = build_faster_rcnn(cfg)          # or FasterRCNN(trunk, rpn, roi_heads, preprocess)
    losses = model(images, targets)         # training: {loss_rpn_cls, loss_rpn_box, loss_cls, loss_box}
    detections = model(images)              # eval: [dict(boxes [M,4], labels [M], scores [M])] per image

images: list of [3, H, W] float RGB in 0..1 (any sizes). targets: list of dict(boxes [N, 4] float xyxy in that
image's pixels (continuous: width = x2 - x1), labels [N] int64 in 1..K); N may be 0. Detections come back in
each image's original pixels, labels in 1..K.
"""
from typing import Dict, List, Optional, Sequence, Union

from torch import Tensor, nn

from detection.modeling.anchors import AnchorGenerator, build_anchor_generator
from detection.modeling.build import META_ARCHITECTURES
from detection.modeling.preprocess import ImagePreprocessor
from detection.modeling.roi_heads import RoIHeads
from detection.modeling.rpn import RegionProposalNetwork, RPNHead


class FasterRCNN(nn.Module):
    """preprocess -> backbone trunk -> RPN proposals -> RoI heads; one loss dict out in training.

    Args:
        backbone: the trunk, [B, 3, H, W] normalised -> [B, C, H/16, W/16] (the per-RoI head lives in roi_heads),
            or an FPNBackbone -> OrderedDict of pyramid levels [B, C, H/s, W/s], finest first.
        rpn: RegionProposalNetwork. roi_heads: RoIHeads (owns the backbone's per-RoI head).
        preprocess: ImagePreprocessor (resize, normalise, pad; maps detections back to original sizes).
    """

    def __init__(self, backbone: nn.Module, rpn: RegionProposalNetwork, roi_heads: RoIHeads,
                 preprocess: ImagePreprocessor):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None, *,
                test_min_size: Optional[int] = None, final_nms: bool = True
                ) -> Union[Dict[str, Tensor], List[Dict[str, Tensor]]]:
        """Training: the loss dict. Eval: detections per image; `test_min_size` overrides the test resize's
        shortest side and `final_nms=False` returns every score-thresholded candidate (test-time augmentation)."""
        if self.training and targets is None:
            raise ValueError("FasterRCNN needs targets in training mode")
        batch = self.preprocess(images, targets if self.training else None, test_min_size=test_min_size)
        features = self.backbone(batch.images)
        proposals, valid, rpn_losses = self.rpn(features, batch.image_sizes, batch.gt_boxes, batch.gt_labels,
                                                batch.scales, batch.images.shape[-2:])
        detections, roi_losses = self.roi_heads(features, proposals, valid, batch.image_sizes, batch.gt_boxes,
                                                batch.gt_labels, final_nms=final_nms)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.preprocess.postprocess(detections, batch)


@META_ARCHITECTURES.register("faster_rcnn")
def build_faster_rcnn(cfg, num_classes: Optional[int] = None, reported_classes: Optional[Sequence[bool]] = None,
                      load_backbone_weights: bool = True) -> FasterRCNN:
    """FasterRCNN from the config (MODEL.*, TRAIN.*, TEST.*, anchors, pooling, pixel statistics).

    num_classes: K + 1 (background included), resolved by the caller (the detection task reads COCO categories
    when DATA.CLASSES is []); None = MODEL.NUM_CLASSES, else len(DATA.CLASSES) + 1.
    reported_classes: K + 1 bools, False for labels whose detections are never reported (placeholders such as
    torchvision's COCO 'N/A' ids, resolved by the caller); None = all. load_backbone_weights: False skips
    MODEL.BACKBONE.WEIGHTS (a checkpoint fills the model)."""
    from detection.config import ConfigError, resolve_num_classes
    from detection.modeling.backbone import build_backbone_from_config

    bb = build_backbone_from_config(cfg, load_weights=load_backbone_weights)
    m, tr, te = cfg.MODEL, cfg.TRAIN, cfg.TEST
    if m.NECK == "fpn":
        trunk, anchors, pooler, channels, pooler_size, stride = _fpn_parts(cfg, bb)
    else:
        trunk, channels, pooler, stride = bb.trunk, bb.trunk_channels, None, cfg.FEAT_STRIDE
        pooler_size = cfg.POOLING_SIZE or bb.pooler_size
        if cfg.ANCHOR_PLACEMENT == "torchvision":
            anchors = build_anchor_generator("torchvision", [stride], [[s * stride for s in cfg.ANCHOR_SCALES]],
                                             cfg.ANCHOR_RATIOS)
        else:
            anchors = AnchorGenerator(cfg.FEAT_STRIDE, cfg.ANCHOR_SCALES, cfg.ANCHOR_RATIOS)
    rpn = RegionProposalNetwork(
        anchors, RPNHead(channels, anchors.num_anchors_per_location, m.RPN.HIDDEN_CHANNELS, m.RPN.CONV_DEPTH),
        fg_iou_thresh=tr.RPN_POSITIVE_OVERLAP, bg_iou_thresh=tr.RPN_NEGATIVE_OVERLAP,
        batch_size_per_image=tr.RPN_BATCHSIZE, positive_fraction=tr.RPN_FG_FRACTION,
        pre_nms_top_n=(tr.RPN_PRE_NMS_TOP_N, te.RPN_PRE_NMS_TOP_N),
        post_nms_top_n=(tr.RPN_POST_NMS_TOP_N, te.RPN_POST_NMS_TOP_N),
        nms_thresh=(tr.RPN_NMS_THRESH, te.RPN_NMS_THRESH), min_size=(tr.RPN_MIN_SIZE, te.RPN_MIN_SIZE),
        allowed_border=tr.RPN_ALLOWED_BORDER, smooth_l1_beta=m.RPN.SMOOTH_L1_BETA,
        clobber_positives=tr.RPN_CLOBBER_POSITIVES, min_size_scaled=m.RPN.MIN_SIZE_SCALED)
    box_head, head_channels = _box_head(cfg, bb, channels, pooler_size)
    num_classes = num_classes or resolve_num_classes(cfg)
    common = dict(
        spatial_scale=1.0 / cfg.FEAT_STRIDE, pooling_mode=cfg.POOLING_MODE,
        sampling_ratio=cfg.POOLING_SAMPLING_RATIO, aligned=cfg.POOLING_ALIGNED, batch_size_per_image=tr.BATCH_SIZE,
        fg_fraction=tr.FG_FRACTION, bg_thresh_lo=tr.BG_THRESH_LO, bbox_means=tr.BBOX_NORMALIZE_MEANS,
        bbox_stds=tr.BBOX_NORMALIZE_STDS, smooth_l1_beta=m.ROI_HEADS.SMOOTH_L1_BETA, score_thresh=te.SCORE_THRESH,
        nms_thresh=te.NMS, detections_per_image=te.DETECTIONS_PER_IMAGE, pooler=pooler,
        min_box_size=te.DETECTION_MIN_SIZE, reported_classes=reported_classes, nms_method=te.NMS_METHOD,
        soft_nms_sigma=te.SOFT_NMS_SIGMA, soft_nms_min_score=te.SOFT_NMS_MIN_SCORE)
    if m.ROI_HEADS.NAME == "cascade":
        from detection.modeling.cascade_heads import build_cascade_heads

        roi_heads = build_cascade_heads(cfg, box_head, lambda: _box_head(cfg, bb, channels, pooler_size, True)[0],
                                        head_channels, num_classes, pooler_size, **common)
    else:
        roi_heads = RoIHeads(box_head, head_channels, num_classes, pooler_size,
                             class_agnostic=m.CLASS_AGNOSTIC_BBOX_REG, fg_thresh=tr.FG_THRESH,
                             bg_thresh_hi=tr.BG_THRESH_HI, bbox_reg_weights=m.ROI_HEADS.BBOX_REG_WEIGHTS or None,
                             **common)
    preprocess = ImagePreprocessor(
        cfg.PIXEL_MEANS, cfg.PIXEL_STDS, test_min_size=te.SCALES[0], test_max_size=te.MAX_SIZE,
        train_min_sizes=tr.SCALES, train_max_size=tr.MAX_SIZE, resize_rule=cfg.INPUT.RESIZE_RULE,
        size_divisibility=int(cfg.INPUT.SIZE_DIVISIBILITY) or stride)
    return FasterRCNN(trunk, rpn, roi_heads, preprocess)


def _box_head(cfg, bb, channels: int, pooler_size: int, copy_backbone_head: bool = False):
    """(per-RoI box head, its output width) of MODEL.ROI_HEADS.BOX_HEAD: a new MLP or conv+fc head, or the
    backbone's own last stage (C4; `copy_backbone_head`: a copy of it, for the cascade's later stages)."""
    from detection.config import ConfigError

    m = cfg.MODEL
    if m.ROI_HEADS.BOX_HEAD == "mlp":
        from detection.modeling.box_head import MLPBoxHead

        head = MLPBoxHead(channels, pooler_size, m.ROI_HEADS.MLP_DIM)
        return head, head.out_channels
    if m.ROI_HEADS.BOX_HEAD == "convfc":
        from detection.modeling.box_head import ConvFCBoxHead

        head = ConvFCBoxHead(channels, pooler_size, m.ROI_HEADS.CONV_DIMS, (m.ROI_HEADS.MLP_DIM,),
                             m.ROI_HEADS.CONV_NORM)
        return head, head.out_channels
    if m.NECK == "fpn":
        raise ConfigError("MODEL.NECK fpn pools 256-channel pyramid levels: MODEL.ROI_HEADS.BOX_HEAD must be 'mlp' "
                          "or 'convfc', not 'backbone' (the backbone's last stage is part of the pyramid)")
    if copy_backbone_head:  # pretrained, like the first stage's, but trained apart
        import copy

        return copy.deepcopy(bb.head), bb.head_channels
    return bb.head, bb.head_channels


def _fpn_parts(cfg, bb):
    """(FPNBackbone, anchor generator, MultiScaleRoIAlign, channels, pooled size, coarsest stage stride)."""
    from detection.config import ConfigError
    from detection.modeling.fpn import build_fpn_backbone
    from detection.modeling.poolers import MultiScaleRoIAlign

    f = cfg.MODEL.FPN
    try:
        neck = build_fpn_backbone(bb, f.IN_STRIDES, f.OUT_CHANNELS, f.NORM, f.TOP_BLOCK)
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(str(exc)) from exc
    strides = [neck.strides[n] for n in neck.level_names]
    if len(f.ANCHOR_SIZES) != len(strides):
        raise ConfigError(f"MODEL.FPN.ANCHOR_SIZES {list(f.ANCHOR_SIZES)}: one size per pyramid level needed, and "
                          f"the pyramid has {len(strides)} ({dict(neck.strides)})")
    if cfg.POOLING_MODE != "align":
        raise ConfigError("MODEL.NECK fpn pools with RoIAlign: POOLING_MODE must be 'align'")
    anchors = build_anchor_generator(cfg.ANCHOR_PLACEMENT, strides, [(s,) for s in f.ANCHOR_SIZES], cfg.ANCHOR_RATIOS)
    size = cfg.POOLING_SIZE or 7
    pooler = MultiScaleRoIAlign(neck.pooled_levels, [neck.strides[n] for n in neck.pooled_levels], size,
                                cfg.POOLING_SAMPLING_RATIO, cfg.POOLING_ALIGNED)
    return neck, anchors, pooler, neck.out_channels, size, max(f.IN_STRIDES)
