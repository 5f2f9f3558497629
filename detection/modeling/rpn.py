"""Region Proposal Network: head, anchor targets + losses (training) and proposal generation, over 1..L levels.

Shapes: B images in a padded batch, anchors N = sum over levels of H_l * W_l * A, each level in `AnchorGenerator`
order and the levels concatenated finest first; ground truth padded to [B, G] (labels 0 = padding). Boxes are xyxy
in the resized (unpadded) image's pixels. A C4 trunk is the one-level case of the same code.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.anchors import AnchorGenerator, MultiLevelAnchorGenerator
from detection.modeling.box_coder import BoxCoder, box_sides_at_least, clip_boxes
from detection.modeling.sampling import BalancedSampler, Matcher, rank_in_group
from detection.ops import batched_nms, box_iou, nms
from detection.ops.shapes import top_n, tracing
from detection.ops.sparse_grad_conv import SparseGradConv2d

# CUDA NMS builds an N x ceil(N / 64) uint64 mask (16 images x 12,000 boxes in one call: 4.6 GB). Above this many
# boxes in a batch (a 128 MiB mask), proposal NMS on CUDA runs image by image instead of in one call.
CUDA_NMS_MAX_BOXES = 32768


def _cat(tensors: Sequence[Tensor], dim: int) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim)


def proposal_nms(boxes: Tensor, scores: Tensor, image_idx: Tensor, iou_threshold: float,
                 max_boxes: Optional[int] = None, levels: Optional[Tensor] = None, num_levels: int = 1) -> Tensor:
    """NMS within each image (and pyramid level) of a batch: boxes of different images, or of different levels
    (`levels` [N] in 0..num_levels-1), never suppress each other.

    boxes [N, 4] xyxy, scores [N], image_idx [N] int64 in non-decreasing order (image-major). Returns int64 indices
    of the kept boxes, each image's in decreasing score order. Up to `max_boxes` boxes (default: unbounded on the
    CPU, CUDA_NMS_MAX_BOXES on CUDA) go through one batched_nms call; more run one NMS per image (B small
    syncs), which bounds the CUDA mask by the largest image's boxes.
    """
    groups = image_idx if levels is None else image_idx * num_levels + levels
    n = boxes.shape[0]
    if max_boxes is None:
        max_boxes = CUDA_NMS_MAX_BOXES if boxes.is_cuda else n
    if tracing() or n <= max_boxes:
        return batched_nms(boxes, scores, groups, iou_threshold)
    counts = torch.bincount(image_idx).tolist()
    kept, start = [], 0
    for count in counts:  # per image, not per box
        if count:
            sl = slice(start, start + count)
            keep = (nms(boxes[sl], scores[sl], iou_threshold) if levels is None
                    else batched_nms(boxes[sl], scores[sl], levels[sl], iou_threshold))
            kept.append(keep + start)
        start += count
    return torch.cat(kept) if kept else image_idx.new_zeros((0,))


class RPNHead(nn.Module):
    """conv_depth x (3x3 conv + ReLU), then 1x1 objectness (one sigmoid logit per anchor) and 1x1 deltas (4 per
    anchor); shared by every pyramid level (torchvision's RPNHead; conv_depth=2 in its v2 detector).

    features [B, C, H, W] -> objectness [B, H*W*A], deltas [B, H*W*A, 4] (AnchorGenerator order).
    Weights ~ N(0, 0.01), biases 0 (py-faster-rcnn). With conv_depth 1 the conv is `conv` (a Conv2d); deeper,
    `conv` is torchvision's Sequential of (Conv2d, ReLU) pairs (keys conv.<i>.0.*).
    """

    def __init__(self, in_channels: int, num_anchors: int, hidden_channels: int = 0, conv_depth: int = 1):
        super().__init__()
        hidden = hidden_channels or in_channels
        if conv_depth < 1:
            raise ValueError(f"RPN conv_depth must be >= 1, got {conv_depth}")
        # SparseGradConv2d: nn.Conv2d's forward; in CPU training a backward that visits only the positions of
        # sampled anchors (the losses' only nonzero gradients), detection/ops/sparse_grad_conv.py
        if conv_depth == 1:
            self.conv = SparseGradConv2d(in_channels, hidden, 3, padding=1)
            convs = [self.conv]
        else:
            convs = [SparseGradConv2d(in_channels if i == 0 else hidden, hidden, 3, padding=1)
                     for i in range(conv_depth)]
            self.conv = nn.Sequential(*(nn.Sequential(c, nn.ReLU(inplace=True)) for c in convs))
        self.conv_depth = conv_depth
        self.cls_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(hidden, num_anchors * 4, 1)
        for layer in (*convs, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        x = F.relu(self.conv(features)) if self.conv_depth == 1 else self.conv(features)
        logits = self.cls_logits(x)  # [B, A, H, W]
        deltas = self.bbox_pred(x)  # [B, A*4, H, W]
        b, a, h, w = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(b, h * w * a)
        deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4)
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Anchors + head; assigns anchors to gt and computes losses in training; returns proposals always.

    Args (a (train, test) pair where two values are given):
        anchor_generator, head: see MultiLevelAnchorGenerator (a one-level AnchorGenerator is wrapped), RPNHead.
        fg_iou_thresh, bg_iou_thresh: positive if IoU >= fg (or best anchor of a gt), negative if < bg.
        batch_size_per_image, positive_fraction: anchors sampled per image for the losses.
        pre_nms_top_n: proposals kept per image and level (by objectness) before NMS.
        post_nms_top_n, nms_thresh: proposals kept per image after NMS (all levels), NMS IoU. NMS runs per image
            and level (boxes of different levels never suppress each other: torchvision, detectron2).
        min_size: proposals with a side below min_size * image_scale pixels are dropped (py-faster-rcnn's
            RPN_MIN_SIZE in original-image pixels; image_scale = resized / original size), or below min_size
            resized-image pixels when `min_size_scaled` is False (torchvision: 1e-3).
        allowed_border: anchors crossing the image border by more than this are ignored in training
            (py-faster-rcnn: 0); < 0 keeps all anchors (torchvision).
        smooth_l1_beta: 1/9 (py-faster-rcnn sigma = 3).
        clobber_positives: py-faster-rcnn's RPN_CLOBBER_POSITIVES.
    """

    def __init__(self, anchor_generator: Union[AnchorGenerator, MultiLevelAnchorGenerator], head: RPNHead,
                 fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: Tuple[int, int] = (12000, 6000), post_nms_top_n: Tuple[int, int] = (2000, 300),
                 nms_thresh: Tuple[float, float] = (0.7, 0.7), min_size: Tuple[float, float] = (16.0, 16.0),
                 allowed_border: float = 0.0, smooth_l1_beta: float = 1.0 / 9.0, clobber_positives: bool = False,
                 min_size_scaled: bool = True):
        super().__init__()
        if not isinstance(anchor_generator, MultiLevelAnchorGenerator):
            anchor_generator = MultiLevelAnchorGenerator([anchor_generator])
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
        self.min_size_scaled = bool(min_size_scaled)
        self.allowed_border = allowed_border
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, features: Union[Tensor, Mapping[str, Tensor]], image_sizes: Tensor,
                gt_boxes: Optional[Tensor] = None, gt_labels: Optional[Tensor] = None,
                image_scales: Optional[Tensor] = None, image_shape: Optional[Sequence[int]] = None
                ) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        """features [B, C, H, W] or name -> [B, C, H_l, W_l] (pyramid levels, finest first); image_sizes [B, 2]
        (h, w); gt_boxes [B, G, 4], gt_labels [B, G] in training; image_shape: the padded batch's (H, W).

        Returns proposals [B, P, 4] (padding rows zero), their validity [B, P] bool, and the losses
        {loss_rpn_cls, loss_rpn_box} in training ({} otherwise). Proposals carry no gradient.
        """
        levels: List[Tensor] = list(features.values()) if isinstance(features, Mapping) else [features]
        anchors = self.anchor_generator(levels, image_shape)  # one [H_l * W_l * A, 4] per level
        heads = [self.head(f) for f in levels]
        logits, deltas = [h[0] for h in heads], [h[1] for h in heads]
        mode = 0 if self.training else 1
        proposals, valid = self.generate_proposals(anchors, [x.detach() for x in logits],
                                                   [x.detach() for x in deltas], image_sizes, image_scales, mode)
        losses: Dict[str, Tensor] = {}
        if self.training:
            if gt_boxes is None or gt_labels is None:
                raise ValueError("RegionProposalNetwork needs gt_boxes and gt_labels in training")
            losses = self.losses(_cat(anchors, 0), _cat(logits, 1), _cat(deltas, 1), image_sizes, gt_boxes,
                                 gt_labels)
        return proposals, valid, losses

    @torch.no_grad()
    def generate_proposals(self, anchors: Union[Tensor, Sequence[Tensor]], logits: Union[Tensor, Sequence[Tensor]],
                           deltas: Union[Tensor, Sequence[Tensor]], image_sizes: Tensor,
                           image_scales: Optional[Tensor], mode: int) -> Tuple[Tensor, Tensor]:
        """Top-k per level by objectness -> decode -> clip -> drop small -> NMS per image and level -> top-k per
        image, by sigmoid probability. All images (and levels) at once.

        Per level l (a tensor instead of a list: one level): anchors [N_l, 4], logits [B, N_l], deltas
        [B, N_l, 4]. Returns proposals [B, P, 4] (padding rows zero) and their validity [B, P]."""
        if isinstance(anchors, Tensor):
            anchors, logits, deltas = [anchors], [logits], [deltas]
        b = logits[0].shape[0]
        boxes_l, scores_l, level_l = [], [], []
        for lvl, (a, lg, dl) in enumerate(zip(anchors, logits, deltas)):  # one top-k per level (a handful)
            top, idx = lg.topk(top_n(lg, self.pre_nms_top_n[mode], dim=1), dim=1)  # [B, k_l], sorted
            scores_l.append(torch.sigmoid(top))
            boxes_l.append(self.box_coder.decode(dl.gather(1, idx[..., None].expand(-1, -1, 4)), a[idx]))
            level_l.append(torch.full_like(idx, lvl))
        boxes, scores, level = _cat(boxes_l, 1), _cat(scores_l, 1), _cat(level_l, 1)  # [B, k, ...]
        boxes = clip_boxes(boxes, image_sizes)
        min_size = torch.full((b, 1), float(self.min_size[mode]), device=boxes.device, dtype=boxes.dtype)
        if image_scales is not None and self.min_size_scaled:
            min_size = min_size * image_scales.to(min_size).view(b, 1)
        # the survivors' indices, found once (one host sync on a GPU; every boolean-mask indexing would be one)
        image_idx, pos = box_sides_at_least(boxes, min_size).nonzero(as_tuple=True)  # row-major, as boxes[mask]
        levels = level[image_idx, pos] if len(anchors) > 1 else None
        boxes, scores = boxes[image_idx, pos], scores[image_idx, pos]
        kept = proposal_nms(boxes, scores, image_idx, self.nms_thresh[mode], levels=levels,
                            num_levels=len(anchors))  # by decreasing score per image
        post = self.post_nms_top_n[mode]
        if tracing():  # one image (export): its top proposals, all valid
            if b != 1:
                raise ValueError(f"a traced RPN takes one image, got {b}")
            kept = kept[:post]
            return boxes[kept][None], torch.ones_like(kept, dtype=torch.bool)[None]
        image_idx = image_idx[kept]
        rank = rank_in_group(image_idx)
        if mode == 1:  # inference: P = post, so no host sync sizes it; proposals beyond the top post of their
            # image are written to an extra column that is dropped
            rank = rank.clamp(max=post)
            proposals = boxes.new_zeros((b, post + 1, 4))
            valid = torch.zeros((b, post + 1), dtype=torch.bool, device=boxes.device)
            proposals[image_idx, rank] = boxes[kept]
            valid[image_idx, rank] = True
            return proposals[:, :post], valid[:, :post]
        sel = rank < post  # training: P = the most proposals an image has (the samplers' random keys follow P)
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
                f"nms_thresh={self.nms_thresh}, min_size={self.min_size}, min_size_scaled={self.min_size_scaled}, "
                f"allowed_border={self.allowed_border}, "
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
