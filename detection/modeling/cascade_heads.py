"""Cascade R-CNN RoI heads (Cai & Vasconcelos, "Cascade R-CNN: Delving into High Quality Object Detection", CVPR
2018): S box-head stages, each with its own head, predictor, matching IoU and box coder, each refining the boxes of
the stage before.

Training (detectron2's CascadeROIHeads rule): stage 0 samples the proposals as the standard heads do (IoU IOUS[0]);
stage s > 0 takes the sampled RoIs' boxes as stage s - 1 regressed them (detached, clipped, empty ones dropped),
labels them against the ground truth at IoU IOUS[s] (no resampling) and encodes its targets with its own coder;
the loss is the sum over stages of LOSS_WEIGHTS[s] x (loss_cls + loss_box), reported per stage
(`loss_cls_stage0`, `loss_box_stage0`, ...). Inference: every stage classifies the boxes the previous stage
refined (none dropped), the class probabilities are averaged over the stages and the last stage's regression
gives the boxes; then the standard heads' post-processing (score threshold, per-class NMS or Soft-NMS, top-k).

Regression is class-agnostic (one box per RoI, as the paper and detectron2), so a stage's output is one box to
refine. Stage 0 is the standard heads' own `box_head`, `cls_score`, `bbox_pred` (the state-dict keys of a Faster
R-CNN), stages 1.. are `refine.<s - 1>`. Shapes as in roi_heads.py: rois [R, 5] (batch index, x1, y1, x2, y2) in
resized-image pixels, ground truth padded to [B, G] (labels 0 = padding).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.box_coder import BoxCoder, clip_boxes
from detection.modeling.roi_heads import RoIHeads, at_least_one_gt_row, proposal_rois
from detection.modeling.sampling import Matcher
from detection.ops import box_iou

__all__ = ["CascadeRoIHeads", "CascadeStage"]


class CascadeStage(nn.Module):
    """A later stage's box head and class-agnostic predictor: [R, Cf, P, P] -> (logits [R, C], deltas [R, 4])."""

    def __init__(self, box_head: nn.Module, head_channels: int, num_classes: int):
        super().__init__()
        self.box_head = box_head
        self.cls_score = nn.Linear(head_channels, num_classes)
        self.bbox_pred = nn.Linear(head_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, pooled: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.box_head(pooled)
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(RoIHeads):
    """RoIHeads with S stages (module docstring).

    Args:
        box_heads: S modules [R, Cf, P, P] -> [R, head_channels], one per stage (separate weights).
        head_channels, num_classes, pooler_size: as RoIHeads.
        stage_ious: S foreground IoU thresholds (0.5, 0.6, 0.7); stage 0's replaces fg_thresh / bg_thresh_hi.
        stage_bbox_reg_weights: S box-coder weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15).
        stage_loss_weights: S weights of the stages' losses (1, 0.5, 0.25).
        **kwargs: RoIHeads' other arguments (pooling, sampling, smooth-L1, post-processing); class_agnostic,
            fg_thresh, bg_thresh_hi and bbox_reg_weights are set by the stages.
    """

    def __init__(self, box_heads: Sequence[nn.Module], head_channels: int, num_classes: int, pooler_size: int,
                 stage_ious: Sequence[float] = (0.5, 0.6, 0.7),
                 stage_bbox_reg_weights: Sequence[Sequence[float]] = ((10, 10, 5, 5), (20, 20, 10, 10),
                                                                      (30, 30, 15, 15)),
                 stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25), **kwargs):
        n = len(box_heads)
        if not n or len(stage_ious) != n or len(stage_bbox_reg_weights) != n or len(stage_loss_weights) != n:
            raise ValueError(f"a cascade needs one IoU, box-coder weights and loss weight per stage: {n} heads, "
                             f"{len(stage_ious)} IoUs, {len(stage_bbox_reg_weights)} weights, "
                             f"{len(stage_loss_weights)} loss weights")
        for name in ("class_agnostic", "fg_thresh", "bg_thresh_hi", "bbox_reg_weights"):
            kwargs.pop(name, None)
        super().__init__(box_heads[0], head_channels, num_classes, pooler_size, class_agnostic=True,
                         fg_thresh=float(stage_ious[0]), bg_thresh_hi=float(stage_ious[0]),
                         bbox_reg_weights=tuple(stage_bbox_reg_weights[0]), **kwargs)
        self.refine = nn.ModuleList(CascadeStage(h, head_channels, num_classes) for h in box_heads[1:])
        self.stage_ious = tuple(float(t) for t in stage_ious)
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        self.box_coders = [self.box_coder] + [BoxCoder(weights=w) for w in stage_bbox_reg_weights[1:]]
        # a later stage labels every box it gets: foreground at IoU >= its threshold, else background
        self.stage_matchers = [self.matcher] + [Matcher(t, t, 0.0, empty_is_background=True) for t in stage_ious[1:]]

    @property
    def num_stages(self) -> int:
        return 1 + len(self.refine)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stage_ious={self.stage_ious}, stage_loss_weights={self.stage_loss_weights}"

    def forward(self, features: Union[Tensor, Mapping[str, Tensor]], proposals: Tensor, proposal_valid: Tensor,
                image_sizes: Tensor, gt_boxes: Optional[Tensor] = None, gt_labels: Optional[Tensor] = None,
                final_nms: bool = True
                ) -> Tuple[Optional[List[Dict[str, Tensor]]], Dict[str, Tensor]]:
        """RoIHeads.forward's contract; training losses are `loss_cls_stage<s>` and `loss_box_stage<s>`, already
        multiplied by the stage's loss weight."""
        if self.training:
            if gt_boxes is None or gt_labels is None:
                raise ValueError("CascadeRoIHeads needs gt_boxes and gt_labels in training")
            return None, self._train_losses(features, proposals, proposal_valid, image_sizes, gt_boxes, gt_labels)
        rois = proposal_rois(proposals, proposal_valid)
        probs, deltas = None, None
        for s in range(self.num_stages):
            if s:
                rois = self.refined_rois(rois, deltas, image_sizes, s - 1)
            cls_logits, deltas = self.predict_stage(s, features, rois)
            p = F.softmax(cls_logits.float(), dim=1)
            probs = p if probs is None else probs + p
        probs = probs * (1.0 / self.num_stages)  # detectron2's average of the stages' probabilities
        return self.detections_from_probs(probs, deltas.float(), rois, image_sizes, final_nms,
                                          self.box_coders[-1]), {}

    def predict_stage(self, stage: int, features: Union[Tensor, Mapping[str, Tensor]], rois: Tensor
                      ) -> Tuple[Tensor, Tensor]:
        """Stage `stage`'s class logits [R, C] and class-agnostic deltas [R, 4] for rois [R, 5]."""
        if stage == 0:
            return self._predict(features, rois)
        return self.refine[stage - 1](self.pooler(features, rois))

    def refined_rois(self, rois: Tensor, deltas: Tensor, image_sizes: Tensor, stage: int) -> Tensor:
        """rois [R, 5] moved by stage `stage`'s deltas [R, 4] (its coder; float32, no gradient) and clipped to
        their images: the next stage's input."""
        boxes = self.box_coders[stage].decode(deltas.detach().float(), rois[:, 1:])
        boxes = clip_boxes(boxes[:, None], image_sizes[rois[:, 0].long()])[:, 0]  # each box by its image's size
        return torch.cat([rois[:, :1], boxes.to(rois.dtype)], dim=1)

    def _train_losses(self, features, proposals: Tensor, proposal_valid: Tensor, image_sizes: Tensor,
                      gt_boxes: Tensor, gt_labels: Tensor) -> Dict[str, Tensor]:
        rois, labels, targets = self.sample_proposals(proposals, proposal_valid, gt_boxes, gt_labels)
        losses: Dict[str, Tensor] = {}
        deltas = None
        for s in range(self.num_stages):
            if s:
                rois = self.refined_rois(rois, deltas, image_sizes, s - 1)
                w, h = rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]
                rois = rois[(w > 0) & (h > 0)]  # detectron2: empty boxes are not trained on
                labels, targets = self.stage_targets(s, rois, gt_boxes, gt_labels)
            cls_logits, deltas = self.predict_stage(s, features, rois)
            stage = self.losses(cls_logits, deltas, labels, targets)
            weight = self.stage_loss_weights[s]
            losses[f"loss_cls_stage{s}"] = stage["loss_cls"] * weight
            losses[f"loss_box_stage{s}"] = stage["loss_box"] * weight
        return losses

    @torch.no_grad()
    def stage_targets(self, stage: int, rois: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Labels [R] (0 = background) and the stage's normalised targets [R, 4] (zeros for background) of rois
        [R, 5]: each matched to its image's best ground-truth box, foreground at IoU >= the stage's threshold."""
        gt_boxes, gt_labels = at_least_one_gt_row(gt_boxes, gt_labels)
        bi = rois[:, 0].long()
        boxes = rois[:, 1:]
        own_gt = gt_boxes[bi]  # [R, G, 4]: each RoI against its own image's ground truth
        iou = box_iou(own_gt, boxes[:, None, :].to(own_gt.dtype))  # [R, G, 1]
        valid = torch.ones((boxes.shape[0], 1), dtype=torch.bool, device=boxes.device)
        matched, match_labels = self.stage_matchers[stage](iou, gt_labels[bi] > 0, valid)
        matched, is_fg = matched[:, 0], match_labels[:, 0] == 1
        rows = torch.arange(boxes.shape[0], device=boxes.device)
        labels = torch.where(is_fg, gt_labels[bi, matched], torch.zeros_like(bi))
        gt = own_gt[rows, matched]
        targets = torch.where(is_fg[:, None], self.box_coders[stage].encode(gt, boxes), torch.zeros_like(boxes))
        return labels, torch.nan_to_num(targets)


def build_cascade_heads(cfg, first_head: nn.Module, make_head, head_channels: int, num_classes: int,
                        pooler_size: int, **kwargs) -> CascadeRoIHeads:
    """CascadeRoIHeads of MODEL.CASCADE.* (the faster_rcnn builder's helper): `first_head` for stage 0 and
    `make_head()` for each later one; kwargs: RoIHeads' shared arguments. ConfigError for a cascade that cannot be
    built (class-specific regression, stage lists of different lengths, weights that are not 4 positive numbers)."""
    from detection.config import ConfigError

    c = cfg.MODEL.CASCADE
    if not cfg.MODEL.CLASS_AGNOSTIC_BBOX_REG:
        raise ConfigError("MODEL.ROI_HEADS.NAME cascade regresses one box per RoI (the paper's and detectron2's "
                          "class-agnostic regression): set MODEL.CLASS_AGNOSTIC_BBOX_REG true")
    stages = len(c.IOUS)
    if len(c.BBOX_REG_WEIGHTS) != stages or len(c.LOSS_WEIGHTS) != stages:
        raise ConfigError(f"MODEL.CASCADE: one entry per stage in IOUS ({stages}), BBOX_REG_WEIGHTS "
                          f"({len(c.BBOX_REG_WEIGHTS)}) and LOSS_WEIGHTS ({len(c.LOSS_WEIGHTS)})")
    for w in c.BBOX_REG_WEIGHTS:
        if (not isinstance(w, (list, tuple)) or len(w) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in w)):
            raise ConfigError(f"MODEL.CASCADE.BBOX_REG_WEIGHTS: each stage's entry must be 4 positive numbers "
                              f"(wx, wy, ww, wh), got {w!r}")
    heads = [first_head] + [make_head() for _ in range(stages - 1)]
    return CascadeRoIHeads(heads, head_channels, num_classes, pooler_size, stage_ious=c.IOUS,
                           stage_bbox_reg_weights=[[float(v) for v in w] for w in c.BBOX_REG_WEIGHTS],
                           stage_loss_weights=c.LOSS_WEIGHTS, **kwargs)
