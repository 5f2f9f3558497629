"""Fast R-CNN RoI heads: proposal sampling and targets, RoIAlign/RoIPool + box head, losses, detections.

Shapes: B images, proposals padded to [B, P] with a validity mask, ground truth padded to [B, G] (labels 0 =
padding), C = num_classes including background (label 0). Boxes are xyxy in resized-image pixels. Features are
one [B, Cf, H, W] map (C4) or a dict of pyramid levels, which the `pooler` (MultiScaleRoIAlign) reads.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.box_coder import BoxCoder, box_sides_at_least, clip_boxes
from detection.modeling.class_nms import check_nms_method, class_nms
from detection.modeling.sampling import BalancedSampler, Matcher, rank_in_group
from detection.ops import RoIAlign, RoIPool, box_iou
from detection.ops.shapes import tracing


def proposal_rois(proposals: Tensor, valid: Tensor) -> Tensor:
    """The valid proposals of a padded batch, proposals [B, P, 4] and valid [B, P], as rois [R, 5] (batch index,
    x1, y1, x2, y2), image-major."""
    bi, pi = valid.nonzero(as_tuple=True)
    return torch.cat([bi[:, None].to(proposals.dtype), proposals[bi, pi]], dim=1)


def at_least_one_gt_row(gt_boxes: Tensor, gt_labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Padded ground truth [B, G, 4] / [B, G] with G >= 1: a batch without any box gets one padding row (label 0),
    which keeps the matching's indexing uniform."""
    if gt_labels.shape[1]:
        return gt_boxes, gt_labels
    b = gt_labels.shape[0]
    return gt_boxes.new_zeros((b, 1, 4)), gt_labels.new_zeros((b, 1))


class RoIHeads(nn.Module):
    """Pools each RoI, runs the backbone's per-RoI `box_head`, classifies and regresses boxes.

    Args:
        box_head: module [R, Cf, P, P] -> [R, head_channels] (VGG fc6/fc7, ResNet res5 + pooling).
        head_channels: D, the width of box_head's output.
        num_classes: C, including the background class 0.
        pooler_size: P; spatial_scale: 1 / trunk stride.
        pooling_mode: 'align' (RoIAlign with `sampling_ratio`, `aligned`) or 'pool' (RoIPool).
        class_agnostic: one box regressor (4 outputs) for all classes instead of 4 * C.
        batch_size_per_image, fg_fraction: RoIs sampled per image in training and max foreground fraction.
        fg_thresh, bg_thresh_hi, bg_thresh_lo: fg if IoU >= fg_thresh, bg if in [lo, hi) (or no gt at all).
        bbox_means, bbox_stds: target normalisation (t - mean) / std.
        smooth_l1_beta: of the box loss (1.0, py-faster-rcnn sigma = 1).
        score_thresh, nms_thresh, detections_per_image: eval post-processing (per-class NMS).
        nms_method: the per-class NMS: 'hard', or Soft-NMS 'linear' (nms_thresh is its IoU threshold) or
            'gaussian' with soft_nms_sigma; soft_nms_min_score drops decayed boxes (detection/modeling/class_nms.py).
        add_gt_as_proposals: append the gt boxes to the proposals in training (py-faster-rcnn).
        pooler: a module (features, rois [R, 5]) -> [R, Cf, P, P] replacing pooling_mode's single-map pooler
            (MultiScaleRoIAlign for a pyramid).
        bbox_reg_weights: torchvision's box coder weights (e.g. (10, 10, 5, 5)) instead of bbox_means/stds.
        min_box_size: detections with a side below this (resized-image pixels) are dropped (torchvision 1e-2).
        reported_classes: C bools; classes marked False (placeholders such as torchvision's COCO 'N/A') stay in
            the softmax but their detections are dropped after the top-k (so the rest are the reference's).
    """

    def __init__(self, box_head: nn.Module, head_channels: int, num_classes: int, pooler_size: int,
                 spatial_scale: float = 1.0 / 16, pooling_mode: str = "align", sampling_ratio: int = 0,
                 aligned: bool = True, class_agnostic: bool = False, batch_size_per_image: int = 128,
                 fg_fraction: float = 0.25, fg_thresh: float = 0.5, bg_thresh_hi: float = 0.5,
                 bg_thresh_lo: float = 0.0, bbox_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 bbox_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2), smooth_l1_beta: float = 1.0,
                 score_thresh: float = 0.05, nms_thresh: float = 0.3, detections_per_image: int = 100,
                 add_gt_as_proposals: bool = True, pooler: Optional[nn.Module] = None,
                 bbox_reg_weights: Optional[Sequence[float]] = None, min_box_size: float = 1e-3,
                 reported_classes: Optional[Sequence[bool]] = None, nms_method: str = "hard",
                 soft_nms_sigma: float = 0.5, soft_nms_min_score: float = 0.001):
        super().__init__()
        if pooler is not None:
            self.pooler = pooler
        elif pooling_mode == "align":
            self.pooler = RoIAlign(pooler_size, spatial_scale, sampling_ratio, aligned)
        elif pooling_mode == "pool":
            self.pooler = RoIPool(pooler_size, spatial_scale)
        else:
            raise ValueError(f"pooling_mode must be 'align' or 'pool', got {pooling_mode!r}")
        self.box_head = box_head
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.cls_score = nn.Linear(head_channels, num_classes)
        self.bbox_pred = nn.Linear(head_channels, 4 if class_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = BoxCoder(bbox_means, bbox_stds, weights=bbox_reg_weights)
        self.matcher = Matcher(fg_thresh, bg_thresh_hi, bg_thresh_lo, empty_is_background=True)
        self.sampler = BalancedSampler(batch_size_per_image, fg_fraction)
        self.smooth_l1_beta = smooth_l1_beta
        self.add_gt_as_proposals = add_gt_as_proposals
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.nms_method = check_nms_method(nms_method)
        self.soft_nms_sigma = float(soft_nms_sigma)
        self.soft_nms_min_score = float(soft_nms_min_score)
        self.min_box_size = float(min_box_size)
        if reported_classes is not None and len(reported_classes) != num_classes:
            raise ValueError(f"reported_classes has {len(reported_classes)} entries for {num_classes} classes")
        self.register_buffer("reported_classes", None if reported_classes is None else
                             torch.tensor([bool(r) for r in reported_classes]), persistent=False)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, class_agnostic={self.class_agnostic}, "
                f"batch_size_per_image={self.sampler.batch_size_per_image}, score_thresh={self.score_thresh}, "
                f"nms_thresh={self.nms_thresh}, detections_per_image={self.detections_per_image}"
                + ("" if self.nms_method == "hard" else f", nms_method={self.nms_method}"))

    def forward(self, features: Union[Tensor, Mapping[str, Tensor]], proposals: Tensor, proposal_valid: Tensor,
                image_sizes: Tensor, gt_boxes: Optional[Tensor] = None, gt_labels: Optional[Tensor] = None,
                final_nms: bool = True
                ) -> Tuple[Optional[List[Dict[str, Tensor]]], Dict[str, Tensor]]:
        """features [B, Cf, H, W] (or pyramid levels); proposals [B, P, 4] + valid [B, P]; image_sizes [B, 2] (h, w).

        Training: returns (None, {loss_cls, loss_box}). Eval: (one dict(boxes [M, 4], labels [M] int64 in
        1..C-1, scores [M]) per image, in resized-image pixels, {}); `final_nms=False` returns every
        score-thresholded candidate instead of the per-class NMS + top-k survivors (test-time augmentation
        merges several views' candidates before one NMS).
        """
        if self.training:
            if gt_boxes is None or gt_labels is None:
                raise ValueError("RoIHeads needs gt_boxes and gt_labels in training")
            rois, labels, targets = self.sample_proposals(proposals, proposal_valid, gt_boxes, gt_labels)
            cls_logits, box_deltas = self._predict(features, rois)
            return None, self.losses(cls_logits, box_deltas, labels, targets)
        rois = proposal_rois(proposals, proposal_valid)
        cls_logits, box_deltas = self._predict(features, rois)
        return self.detections(cls_logits, box_deltas, rois, image_sizes, final_nms), {}

    def _predict(self, features: Union[Tensor, Mapping[str, Tensor]], rois: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.box_head(self.pooler(features, rois))
        return self.cls_score(x), self.bbox_pred(x)

    @torch.no_grad()
    def sample_proposals(self, proposals: Tensor, valid: Tensor, gt_boxes: Tensor, gt_labels: Tensor
                         ) -> Tuple[Tensor, Tensor, Tensor]:
        """Sample fg/bg RoIs of every image at once.

        Returns rois [R, 5] (batch index, x1, y1, x2, y2), labels [R] int64 (0 = background) and normalised
        box targets [R, 4] (zeros for background rows).
        """
        gt_boxes, gt_labels = at_least_one_gt_row(gt_boxes, gt_labels)
        gt_valid = gt_labels > 0
        if self.add_gt_as_proposals:
            proposals = torch.cat([proposals, gt_boxes.to(proposals.dtype)], dim=1)
            valid = torch.cat([valid, gt_valid], dim=1)
        iou = box_iou(gt_boxes, proposals)  # [B, G, P'] (NaN for padding gt, masked by the matcher)
        matched, match_labels = self.matcher(iou, gt_valid, valid)
        fg, bg = self.sampler(match_labels)
        bi, pi = (fg | bg).nonzero(as_tuple=True)
        boxes = proposals[bi, pi]
        is_fg = fg[bi, pi]
        gt = gt_boxes[bi, matched[bi, pi]]
        labels = torch.where(is_fg, gt_labels[bi, matched[bi, pi]], torch.zeros_like(bi))
        targets = torch.where(is_fg[:, None], self.box_coder.encode(gt, boxes), torch.zeros_like(boxes))
        targets = torch.nan_to_num(targets)  # bg rows may pair with an empty padding gt; they are zeroed
        rois = torch.cat([bi[:, None].to(boxes.dtype), boxes], dim=1)
        return rois, labels, targets

    def losses(self, cls_logits: Tensor, box_deltas: Tensor, labels: Tensor, targets: Tensor
               ) -> Dict[str, Tensor]:
        """Cross-entropy over the sampled RoIs; smooth-L1 of the fg RoIs' target-class deltas / #RoIs."""
        num = max(labels.numel(), 1)
        loss_cls = F.cross_entropy(cls_logits, labels, reduction="sum") / num
        fg = (labels > 0).nonzero(as_tuple=True)[0]
        deltas = box_deltas.view(box_deltas.shape[0], box_deltas.shape[1] // 4, 4)
        cls = torch.zeros_like(fg) if self.class_agnostic else labels[fg]
        loss_box = F.smooth_l1_loss(deltas[fg, cls], targets[fg], beta=self.smooth_l1_beta,
                                    reduction="sum") / num
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    @torch.no_grad()
    def detections(self, cls_logits: Tensor, box_deltas: Tensor, rois: Tensor, image_sizes: Tensor,
                   final_nms: bool = True) -> List[Dict[str, Tensor]]:
        """Softmax, then `detections_from_probs` with this head's box coder."""
        return self.detections_from_probs(F.softmax(cls_logits, dim=1), box_deltas, rois, image_sizes, final_nms)

    @torch.no_grad()
    def detections_from_probs(self, probs: Tensor, box_deltas: Tensor, rois: Tensor, image_sizes: Tensor,
                              final_nms: bool = True, box_coder: Optional[BoxCoder] = None
                              ) -> List[Dict[str, Tensor]]:
        """Class probabilities probs [R, C] (background column 0) and deltas [R, 4 or 4C] of rois [R, 5]: per-class
        decode (by `box_coder`, default this head's), clip, score threshold, per-class NMS (hard or Soft-NMS) and
        top-k (unless not `final_nms`: all candidates by decreasing score), for all images at once."""
        r, c = probs.shape
        k = c - 1  # foreground classes
        scores = probs[:, 1:]  # [R, K]
        deltas = box_deltas.view(r, box_deltas.shape[1] // 4, 4)
        deltas = deltas.expand(r, k, 4) if self.class_agnostic else deltas[:, 1:]
        image_idx = rois[:, 0].long()
        coder = self.box_coder if box_coder is None else box_coder
        boxes = clip_boxes(coder.decode(deltas, rois[:, None, 1:]), image_sizes[image_idx])
        labels = torch.arange(1, c, device=scores.device).expand(r, k)
        keep = (scores > self.score_thresh) & box_sides_at_least(boxes, self.min_box_size)
        ri, ci = keep.nonzero(as_tuple=True)  # found once: one host sync on a GPU (row-major, as boxes[keep])
        boxes, scores, labels, image_idx = boxes[ri, ci], scores[ri, ci], labels[ri, ci], image_idx[ri]
        b = image_sizes.shape[0]
        if tracing():  # one image (export): per-class NMS, top-k, no split
            if b != 1:
                raise ValueError(f"traced RoI heads take one image, got {b}")
            kept, scores = self._class_nms(boxes, scores, labels)
            kept = kept[: self.detections_per_image]
            if self.reported_classes is not None:
                kept = kept[self.reported_classes[labels[kept]]]
            return [{"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}]
        if final_nms:
            kept, scores = self._class_nms(boxes, scores, image_idx * c + labels)  # by decreasing score
            selected = rank_in_group(image_idx[kept]) < self.detections_per_image
        else:
            kept = torch.argsort(scores, descending=True, stable=True)
            selected = torch.ones_like(kept, dtype=torch.bool)
        if self.reported_classes is not None:
            selected &= self.reported_classes[labels[kept]]
        # grouped by image in score order, the unselected last (image b); one host sync: the counts
        key = torch.where(selected, image_idx[kept], b)
        counts = torch.zeros(b + 1, dtype=torch.int64, device=key.device).index_add_(0, key, torch.ones_like(key))
        counts = counts.tolist()[:b]
        kept = kept[torch.sort(key, stable=True).indices[:sum(counts)]]
        return [{"boxes": bx, "scores": s, "labels": lab} for bx, s, lab in
                zip(boxes[kept].split(counts), scores[kept].split(counts), labels[kept].split(counts))]

    def _class_nms(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> Tuple[Tensor, Tensor]:
        """(kept indices by decreasing score, scores with the kept ones decayed under Soft-NMS)."""
        return class_nms(boxes, scores, groups, self.nms_thresh, self.nms_method, self.soft_nms_sigma,
                         self.soft_nms_min_score)
