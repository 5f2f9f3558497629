"""Region Proposal Network: head, anchor targets + losses (training) and proposal generation.

Shapes: B images in a padded batch, anchors N = H * W * A in `AnchorGenerator` order, ground truth padded
to [B, G] (labels 0 = padding). Boxes are xyxy in the resized (unpadded) image's pixels.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.anchors import AnchorGenerator
from detection.modeling.box_coder import BoxCoder, box_sides_at_least, clip_boxes
from detection.modeling.sampling import BalancedSampler, Matcher, rank_in_group
from detection.ops import batched_nms, box_iou, nms

# CUDA NMS builds an N x ceil(N / 64) uint64 mask (16 images x 12,000 boxes in one call: 4.6 GB). Above this many
# boxes in a batch (a 128 MiB mask), proposal NMS on CUDA runs image by image instead of in one call.
CUDA_NMS_MAX_BOXES = 32768


def proposal_nms(boxes: Tensor, scores: Tensor, image_idx: Tensor, iou_threshold: float,
                 max_boxes: Optional[int] = None) -> Tensor:
    """NMS within each image of a batch: boxes of different images never suppress each other.

    boxes [N, 4] xyxy, scores [N], image_idx [N] int64 in non-decreasing order (image-major). Returns int64 indices
    of the kept boxes, each image's in decreasing score order. Up to `max_boxes` boxes (default: unbounded on the
    CPU, CUDA_NMS_MAX_BOXES on CUDA) go through one batched_nms call; more run one `nms` per image (B small
    syncs), which bounds the CUDA mask by the largest image's boxes.
    """
    n = boxes.shape[0]
    if max_boxes is None:
        max_boxes = CUDA_NMS_MAX_BOXES if boxes.is_cuda else n
    if n <= max_boxes:
        return batched_nms(boxes, scores, image_idx, iou_threshold)
    counts = torch.bincount(image_idx).tolist()
    kept, start = [], 0
    for count in counts:  # per image, not per box
        if count:
            kept.append(nms(boxes[start:start + count], scores[start:start + count], iou_threshold) + start)
        start += count
    return torch.cat(kept)


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 objectness (one sigmoid logit per anchor) and 1x1 deltas (4 per anchor).

    features [B, C, H, W] -> objectness [B, H*W*A], deltas [B, H*W*A, 4] (AnchorGenerator order).
    Weights ~ N(0, 0.01), biases 0 (py-faster-rcnn).
    """

    def __init__(self, in_channels: int, num_anchors: int, hidden_channels: int = 0):
        super().__init__()
        hidden = hidden_channels or in_channels
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.cls_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(hidden, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        x = F.relu(self.conv(features))
        logits = self.cls_logits(x)  # [B, A, H, W]
        deltas = self.bbox_pred(x)  # [B, A*4, H, W]
        b, a, h, w = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(b, h * w * a)
        deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4)
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Anchors + head; assigns anchors to gt and computes losses in training; returns proposals always.

    Args (a (train, test) pair where two values are given):
        anchor_generator, head: see AnchorGenerator, RPNHead.
        fg_iou_thresh, bg_iou_thresh: positive if IoU >= fg (or best anchor of a gt), negative if < bg.
        batch_size_per_image, positive_fraction: anchors sampled per image for the losses.
        pre_nms_top_n, post_nms_top_n, nms_thresh: proposals per image before / after NMS, NMS IoU.
        min_size: proposals with a side below min_size * image_scale pixels are dropped (py-faster-rcnn's
            RPN_MIN_SIZE in original-image pixels; image_scale = resized / original size).
        allowed_border: anchors crossing the image border by more than this are ignored in training
            (py-faster-rcnn: 0); < 0 keeps all anchors (torchvision).
        smooth_l1_beta: 1/9 (py-faster-rcnn sigma = 3).
        clobber_positives: py-faster-rcnn's RPN_CLOBBER_POSITIVES.
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: Tuple[int, int] = (12000, 6000), post_nms_top_n: Tuple[int, int] = (2000, 300),
                 nms_thresh: Tuple[float, float] = (0.7, 0.7), min_size: Tuple[float, float] = (16.0, 16.0),
                 allowed_border: float = 0.0, smooth_l1_beta: float = 1.0 / 9.0, clobber_positives: bool = False):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder()
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, 0.0, allow_low_quality_matches=True,
                               clobber_positives=clobber_positives, empty_is_background=True)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = tuple(pre_nms_top_n)
        self.post_nms_top_n = tuple(post_nms_top_n)
        self.nms_thresh = tuple(nms_thresh)
        self.min_size = tuple(min_size)
        self.allowed_border = allowed_border
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, features: Tensor, image_sizes: Tensor, gt_boxes: Optional[Tensor] = None,
                gt_labels: Optional[Tensor] = None, image_scales: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        """features [B, C, H, W]; image_sizes [B, 2] (h, w); gt_boxes [B, G, 4], gt_labels [B, G] in training.

        Returns proposals [B, P, 4] (padding rows zero), their validity [B, P] bool, and the losses
        {loss_rpn_cls, loss_rpn_box} in training ({} otherwise). Proposals carry no gradient.
        """
        anchors = self.anchor_generator(features)
        logits, deltas = self.head(features)
        mode = 0 if self.training else 1
        proposals, valid = self.generate_proposals(anchors, logits.detach(), deltas.detach(), image_sizes,
                                                   image_scales, mode)
        losses: Dict[str, Tensor] = {}
        if self.training:
            if gt_boxes is None or gt_labels is None:
                raise ValueError("RegionProposalNetwork needs gt_boxes and gt_labels in training")
            losses = self.losses(anchors, logits, deltas, image_sizes, gt_boxes, gt_labels)
        return proposals, valid, losses

    @torch.no_grad()
    def generate_proposals(self, anchors: Tensor, logits: Tensor, deltas: Tensor, image_sizes: Tensor,
                           image_scales: Optional[Tensor], mode: int) -> Tuple[Tensor, Tensor]:
        """Top-k by objectness -> decode -> clip -> drop small -> NMS per image -> top-k. All images at once."""
        b, n = logits.shape
        k = min(self.pre_nms_top_n[mode], n)
        scores, idx = logits.topk(k, dim=1)  # [B, k], sorted
        boxes = self.box_coder.decode(deltas.gather(1, idx[..., None].expand(b, k, 4)), anchors[idx])
        boxes = clip_boxes(boxes, image_sizes)
        min_size = torch.full((b, 1), float(self.min_size[mode]), device=boxes.device, dtype=boxes.dtype)
        if image_scales is not None:
            min_size = min_size * image_scales.to(min_size).view(b, 1)
        keep = box_sides_at_least(boxes, min_size)  # [B, k]
        image_idx = torch.arange(b, device=boxes.device)[:, None].expand(b, k)[keep]
        boxes, scores = boxes[keep], scores[keep]
        kept = proposal_nms(boxes, scores, image_idx, self.nms_thresh[mode])  # by decreasing score per image
        image_idx = image_idx[kept]
        rank = rank_in_group(image_idx)
        sel = rank < self.post_nms_top_n[mode]
        kept, image_idx, rank = kept[sel], image_idx[sel], rank[sel]
        p = int(rank.max()) + 1 if rank.numel() else 0
        proposals = boxes.new_zeros((b, p, 4))
        valid = torch.zeros((b, p), dtype=torch.bool, device=boxes.device)
        proposals[image_idx, rank] = boxes[kept]
        valid[image_idx, rank] = True
        return proposals, valid

    def losses(self, anchors: Tensor, logits: Tensor, deltas: Tensor, image_sizes: Tensor, gt_boxes: Tensor,
               gt_labels: Tensor) -> Dict[str, Tensor]:
        """Objectness BCE over the sampled anchors; smooth-L1 of the positives / number of sampled anchors."""
        b, g = gt_labels.shape
        with torch.no_grad():
            inside = self._inside_mask(anchors, image_sizes)
            iou = box_iou(gt_boxes.reshape(b * g, 4), anchors).view(b, g, anchors.shape[0])
            matched, labels = self.matcher(iou, gt_labels > 0, inside)
            fg, bg = self.sampler(labels)
            sampled = fg | bg
            num_sampled = max(int(sampled.sum()), 1)
            bi, ai = fg.nonzero(as_tuple=True)
            targets = self.box_coder.encode(gt_boxes[bi, matched[bi, ai]], anchors[ai])
        loss_cls = F.binary_cross_entropy_with_logits(logits[sampled], fg[sampled].to(logits.dtype),
                                                      reduction="sum") / num_sampled
        loss_box = F.smooth_l1_loss(deltas[bi, ai], targets, beta=self.smooth_l1_beta,
                                    reduction="sum") / num_sampled
        return {"loss_rpn_cls": loss_cls, "loss_rpn_box": loss_box}

    def extra_repr(self) -> str:
        return (f"pre_nms_top_n={self.pre_nms_top_n}, post_nms_top_n={self.post_nms_top_n}, "
                f"nms_thresh={self.nms_thresh}, min_size={self.min_size}, allowed_border={self.allowed_border}, "
                f"batch_size_per_image={self.sampler.batch_size_per_image}")

    def _inside_mask(self, anchors: Tensor, image_sizes: Tensor) -> Tensor:
        """[B, N] bool: anchors within allowed_border of each image (all True when allowed_border < 0)."""
        b, n = image_sizes.shape[0], anchors.shape[0]
        if self.allowed_border < 0:
            return torch.ones((b, n), dtype=torch.bool, device=anchors.device)
        border = float(self.allowed_border)
        sizes = image_sizes.to(anchors.dtype)
        ok = (anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
        return (ok[None] & (anchors[None, :, 2] <= sizes[:, 1:2] + border)
                & (anchors[None, :, 3] <= sizes[:, 0:1] + border))
