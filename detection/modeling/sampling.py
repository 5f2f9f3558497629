"""Matching predictions to ground truth and balanced fg/bg sampling, vectorised over a padded batch.

Ground truth of a batch is padded to [B, G]: boxes [B, G, 4] xyxy and labels [B, G] with 0 marking padding.
IoU comes from `detection.ops.box_iou` ([B, G, 4] x [B, N, 4] -> [B, G, N]); padding is masked in `Matcher`.
Label codes of a match: 1 foreground, 0 background, -1 ignored.
"""
from typing import Tuple

import torch
from torch import Tensor

FG, BG, IGNORE = 1, 0, -1


class Matcher:
    """Assigns each prediction (anchor or proposal) its best ground-truth box and a fg/bg/ignore label.

    Args:
        fg_thresh: best IoU >= fg_thresh -> foreground.
        bg_thresh_hi, bg_thresh_lo: best IoU in [lo, hi) -> background; else ignored.
        allow_low_quality_matches: each gt's highest-IoU predictions (ties included, IoU > 0) are foreground
            too (the RPN rule of py-faster-rcnn / Faster R-CNN paper).
        clobber_positives: apply the background rule after the foreground rules (py-faster-rcnn's
            RPN_CLOBBER_POSITIVES).
        empty_is_background: in images without any gt, every valid prediction is background (IoU 0 would fall
            below bg_thresh_lo > 0 and be ignored otherwise).
    """

    def __init__(self, fg_thresh: float, bg_thresh_hi: float, bg_thresh_lo: float = 0.0,
                 allow_low_quality_matches: bool = False, clobber_positives: bool = False,
                 empty_is_background: bool = True):
        assert bg_thresh_lo <= bg_thresh_hi <= fg_thresh or allow_low_quality_matches
        self.fg_thresh = fg_thresh
        self.bg_thresh_hi = bg_thresh_hi
        self.bg_thresh_lo = bg_thresh_lo
        self.allow_low_quality_matches = allow_low_quality_matches
        self.clobber_positives = clobber_positives
        self.empty_is_background = empty_is_background

    def __call__(self, iou: Tensor, gt_valid: Tensor, pred_valid: Tensor) -> Tuple[Tensor, Tensor]:
        """iou: [B, G, N]; gt_valid: [B, G] bool; pred_valid: [B, N] bool (invalid predictions are ignored).

        Returns matched_idxs [B, N] int64 (best gt index, 0 where the image has no gt) and labels [B, N] int8.
        """
        b, g, n = iou.shape
        labels = torch.full((b, n), IGNORE, dtype=torch.int8, device=iou.device)
        if g == 0:
            if self.empty_is_background:
                labels[pred_valid] = BG
            return torch.zeros((b, n), dtype=torch.int64, device=iou.device), labels
        iou = iou.masked_fill(~(gt_valid[:, :, None] & pred_valid[:, None, :]), -1.0)
        max_iou, matched = iou.max(dim=1)  # [B, N]
        bg = (max_iou < self.bg_thresh_hi) & (max_iou >= self.bg_thresh_lo)
        if self.empty_is_background:
            bg |= ~gt_valid.any(dim=1, keepdim=True)
        bg &= pred_valid
        fg = max_iou >= self.fg_thresh
        if self.allow_low_quality_matches:
            best = iou.max(dim=2, keepdim=True).values  # [B, G, 1]
            fg |= ((iou == best) & (best > 0)).any(dim=1)
        if self.clobber_positives:
            labels[fg] = FG
            labels[bg] = BG
        else:
            labels[bg] = BG
            labels[fg] = FG
        return matched, labels


class BalancedSampler:
    """Samples at most `batch_size_per_image` labels per image, at most `positive_fraction` of them fg.

    py-faster-rcnn's rule: num_fg = min(#fg, round(fraction * batch)); num_bg = min(#bg, batch - num_fg),
    each drawn uniformly without replacement. Vectorised: random keys + one top-k per image row.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(self, labels: Tensor, generator: torch.Generator = None) -> Tuple[Tensor, Tensor]:
        """labels: [B, N] (1 fg, 0 bg, -1 ignore) -> (fg_mask, bg_mask), each [B, N] bool."""
        is_fg = labels == FG
        is_bg = labels == BG
        max_fg = int(round(self.batch_size_per_image * self.positive_fraction))
        num_fg = is_fg.sum(dim=1).clamp(max=max_fg)
        num_bg = torch.minimum(is_bg.sum(dim=1), self.batch_size_per_image - num_fg)
        keys = torch.rand(labels.shape, device=labels.device, generator=generator)
        return _random_subset(is_fg, num_fg, max_fg, keys), \
            _random_subset(is_bg, num_bg, self.batch_size_per_image, keys)


def _random_subset(mask: Tensor, counts: Tensor, max_count: int, keys: Tensor) -> Tensor:
    """Per row b, `counts[b]` random True entries of mask [B, N] (keys [B, N] uniform in [0, 1))."""
    k = min(max_count, mask.shape[1])
    out = torch.zeros_like(mask)
    if k == 0:
        return out
    scored = torch.where(mask, keys, keys.new_full((), -1.0))
    idx = scored.topk(k, dim=1, sorted=True).indices  # the selected members come first, in random order
    take = torch.arange(k, device=mask.device)[None, :] < counts[:, None]
    out.scatter_(1, idx, take)
    return out


def rank_in_group(groups: Tensor) -> Tensor:
    """Position of each entry of groups [N] among the entries with the same group id, in the given order.

    After a score-sorted NMS over several images, `rank_in_group(image_idx) < k` keeps each image's top k
    boxes, and (image_idx, rank) scatters them into a padded [B, k] tensor, without a Python loop.
    """
    if groups.numel() == 0:
        return torch.zeros_like(groups, dtype=torch.int64)
    order = torch.sort(groups, stable=True).indices
    sorted_groups = groups[order]
    starts = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    pos = torch.arange(groups.numel(), device=groups.device)
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - first
    return rank
