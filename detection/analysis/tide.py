"""TIDE's error breakdown (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV
2020), computed as the ``tidecv`` package computes it (tests/test_analysis.py checks every number against it).

    result = tide_errors(images)      # images: [ImageDetections], one per test image
    result.ap                         # mAP at IoU pos_thresh (percent, COCO's 101-point interpolation)
    result.main["loc"]                # dAP: the mAP points gained if every localisation error were fixed

Per image, detections (the top max_dets by score) are matched greedily in score order to the unmatched ground
truth of their class with the highest IoU >= pos_thresh (0.5); detections inside an ignore region (VOC difficult or
COCO crowd boxes of their class: intersection over the detection's area > pos_thresh) leave the AP. Each false
positive gets the first type that fits:

- loc (localisation): right class, best IoU with that class in [bg_thresh, pos_thresh];
- cls (classification): IoU >= pos_thresh with a box of another class;
- dupe (duplicate): IoU >= pos_thresh with a box of its class already matched by a higher-scored detection;
- bkg (background): IoU <= bg_thresh (0.1) with every box;
- both: none of these (wrong class and poorly localised);
and every ground-truth box that no detection matched, nor any cls / loc error could fix, is missed.
Fixing a type recomputes the mAP: a cls or loc error becomes a true positive of the box it would match (the
highest-scored such error per box; the others are removed), dupe / bkg / both errors are removed, a missed box
leaves the count of positives. dAP = max(fixed mAP - mAP, 0). The special errors: false_pos (every false positive
scored 0) and false_neg (every unmatched box removed from the positives). Ties between equal scores are broken as
tidecv does (the order detections and errors were added), so even AP over tied scores agrees.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["ImageDetections", "TideResult", "tide_errors", "pairwise_iou", "MAIN_ERRORS", "SPECIAL_ERRORS"]

#: the main error types, in TIDE's order (its short names: Cls, Loc, Both, Dupe, Bkg, Miss)
MAIN_ERRORS = ("cls", "loc", "both", "dupe", "bkg", "missed")
SPECIAL_ERRORS = ("false_pos", "false_neg")
_CLS, _LOC, _BOTH, _DUPE, _BKG, _MISS = range(6)


@dataclasses.dataclass
class ImageDetections:
    """One image: ground truth boxes float [G, 4] xyxy continuous, gt_labels int [G], gt_ignore bool [G] (ignore
    regions: difficult or crowd); detections float [D, 4] xyxy, scores [D], labels [D]."""

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_ignore: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def pairwise_iou(a: np.ndarray, b: np.ndarray, crowd: bool = False) -> np.ndarray:
    """float64 [N, M] IoU of continuous xyxy boxes (pycocotools' bbox IoU); crowd: intersection over a's area."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    if crowd:
        union = np.broadcast_to(area_a[:, None], inter.shape)
    else:
        union = area_a[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclasses.dataclass
class TideResult:
    """ap: mAP (percent). main / special: {error type: dAP in mAP points}. counts: {main type: errors}.
    errors: one dict per error (type, image, score, label, box, gt_box, gt_label; missed: image, gt_box,
    gt_label), in the order found. per_class_ap: {label: AP percent}."""

    ap: float
    main: Dict[str, float]
    special: Dict[str, float]
    counts: Dict[str, int]
    errors: List[dict]
    per_class_ap: Dict[int, float]
    pos_thresh: float
    bg_thresh: float


class _Points:
    """AP data points in the order tidecv pushes them: class, id, score, true-positive flag."""

    def __init__(self):
        self.cls, self.ids, self.score, self.true = [], [], [], []

    def push(self, c, i, s, t):
        self.cls.append(c)
        self.ids.append(i)
        self.score.append(s)
        self.true.append(t)

    def arrays(self):
        return (np.asarray(self.cls, np.int64), np.asarray(self.ids, np.int64), np.asarray(self.score, np.float64),
                np.asarray(self.true, bool))


def _ap(scores: np.ndarray, true: np.ndarray, positives: int) -> float:
    """tidecv's APDataObject.get_ap: the precision envelope sampled at recall 0, 0.01, ..., 1 (percent)."""
    if positives == 0:
        return 0.0
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = true[order]
    n_true = np.cumsum(tp)
    n_false = np.cumsum(~tp)
    precision = n_true / (n_true + n_false)
    recall = n_true / positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    x = np.array([k / 100 for k in range(101)])
    idx = np.searchsorted(recall, x, side="left")
    y = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return sum(y.tolist()) / len(y) * 100


def _map(cls: np.ndarray, scores: np.ndarray, true: np.ndarray, positives: Dict[int, int]) -> tuple:
    """(mAP over the classes with points or positives, {class: AP})."""
    classes = sorted(set(cls.tolist()) | {c for c, n in positives.items() if n != 0})
    per_class = {c: _ap(scores[cls == c], true[cls == c], positives.get(c, 0)) for c in classes}
    return (sum(per_class.values()) / len(per_class) if per_class else 0.0), per_class


def tide_errors(images: Sequence[ImageDetections], pos_thresh: float = 0.5, bg_thresh: float = 0.1,
                max_dets: int = 100, progress: bool = False) -> TideResult:
    """TIDE's main and special errors of `images` (module docstring); progress: a bar over the images."""
    from tqdm import tqdm

    points = _Points()
    positives: Dict[int, int] = {}
    fn_count: Dict[int, int] = {}
    # errors, as parallel lists: type, pred id (-1 for missed), score, pred class, pred counted in AP, gt key
    e_type, e_pid, e_score, e_cls, e_counted, e_gt, e_gt_cls = [], [], [], [], [], [], []
    details: List[dict] = []
    best: Dict[tuple, tuple] = {}  # gt key -> (best score, pred id) among the cls / loc errors that claim it
    usable = set()
    next_id = 0

    def add_error(kind, pid, score, cls, counted, gt_key, gt_cls, detail):
        e_type.append(kind)
        e_pid.append(pid)
        e_score.append(score)
        e_cls.append(cls)
        e_counted.append(counted)
        e_gt.append(gt_key)
        e_gt_cls.append(gt_cls)
        details.append(detail)

    for img_index, im in enumerate(tqdm(images, desc="TIDE", unit="image", disable=not progress, leave=False)):
        gt_boxes = np.asarray(im.gt_boxes, np.float64).reshape(-1, 4)
        gt_labels = np.asarray(im.gt_labels, np.int64).reshape(-1)
        ignore = np.asarray(im.gt_ignore, bool).reshape(-1)
        real = np.flatnonzero(~ignore)
        for c in gt_labels[real].tolist():
            positives[c] = positives.get(c, 0) + 1
        n_det = len(np.asarray(im.scores).reshape(-1))
        ids = np.arange(next_id, next_id + n_det)
        next_id += n_det
        if n_det == 0:
            for g in real:
                fn_count[int(gt_labels[g])] = fn_count.get(int(gt_labels[g]), 0) + 1
                add_error(_MISS, -1, 0.0, -1, False, (img_index, int(g)), int(gt_labels[g]),
                          dict(type="missed", image=img_index, gt_box=gt_boxes[g].tolist(), gt_label=int(gt_labels[g])))
            continue
        scores = np.asarray(im.scores, np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")[:max_dets]
        boxes = np.asarray(im.boxes, np.float64).reshape(-1, 4)[order]
        labels = np.asarray(im.labels, np.int64).reshape(-1)[order]
        scores, ids = scores[order], ids[order]
        g_boxes, g_labels = gt_boxes[real], gt_labels[real]
        iou = pairwise_iou(boxes, g_boxes)
        same = labels[:, None] == g_labels[None, :]
        cls_iou = iou * same
        used = np.zeros(len(boxes), dtype=object)  # True, False or None (ignored), as tidecv
        used[:] = False
        gt_used = np.zeros(len(g_boxes), bool)
        matched_with = np.full(len(g_boxes), -1, np.int64)
        if len(g_boxes):
            buffer = cls_iou.copy()
            for p in range(len(boxes)):
                g = int(np.argmax(buffer[p]))
                if buffer[p, g] >= pos_thresh:
                    used[p] = True
                    gt_used[g] = True
                    matched_with[g] = p
                    buffer[:, g] = 0
        regions = np.flatnonzero(ignore)
        if regions.size:
            crowd_iou = pairwise_iou(boxes, gt_boxes[regions], crowd=True)
            for r, g in enumerate(regions):
                hit = (crowd_iou[:, r] > pos_thresh) & (labels == gt_labels[g])
                for p in np.flatnonzero(hit):
                    if used[p] is False:
                        used[p] = None
        for p in range(len(boxes)):
            if used[p] is not None:
                points.push(int(labels[p]), int(ids[p]), float(scores[p]), bool(used[p]))
            if used[p] is True:
                continue
            counted = used[p] is not None
            base = dict(image=img_index, score=float(scores[p]), label=int(labels[p]), box=boxes[p].tolist())
            if len(g_boxes) == 0:
                add_error(_BKG, int(ids[p]), float(scores[p]), int(labels[p]), counted, None, -1,
                          dict(type="bkg", **base))
                continue
            g = int(np.argmax(cls_iou[p]))
            kind = None
            if bg_thresh <= cls_iou[p, g] <= pos_thresh:
                kind = _LOC
            else:
                other = iou[p] * ~same[p]
                g = int(np.argmax(other))
                if other[g] >= pos_thresh:
                    kind = _CLS
            if kind is not None:
                key = (img_index, int(real[g]))
                if not gt_used[g]:  # tidecv's BestGTMatch: the highest-scored error claiming a box fixes it
                    usable.add(key)
                    if key not in best or best[key][0] < scores[p]:
                        best[key] = (float(scores[p]), int(ids[p]))
                    fix_key = key
                else:
                    fix_key = None
                add_error(kind, int(ids[p]), float(scores[p]), int(labels[p]), counted, fix_key,
                          int(g_labels[g]) if kind == _CLS else int(labels[p]),
                          dict(type="loc" if kind == _LOC else "cls", gt_box=g_boxes[g].tolist(),
                               gt_label=int(g_labels[g]), **base))
                continue
            dup = iou[p] * same[p] * gt_used
            if dup.max() >= pos_thresh:
                g = int(np.argmax(dup))
                add_error(_DUPE, int(ids[p]), float(scores[p]), int(labels[p]), counted, None, -1,
                          dict(type="dupe", gt_box=g_boxes[g].tolist(), gt_label=int(g_labels[g]), **base))
            elif iou[p].max() <= bg_thresh:
                add_error(_BKG, int(ids[p]), float(scores[p]), int(labels[p]), counted, None, -1,
                          dict(type="bkg", **base))
            else:
                g = int(np.argmax(iou[p]))
                add_error(_BOTH, int(ids[p]), float(scores[p]), int(labels[p]), counted, None, -1,
                          dict(type="both", gt_box=g_boxes[g].tolist(), gt_label=int(g_labels[g]), **base))
        for g in np.flatnonzero(~gt_used):
            c = int(g_labels[g])
            fn_count[c] = fn_count.get(c, 0) + 1
            if (img_index, int(real[g])) not in usable:
                add_error(_MISS, -1, 0.0, -1, False, (img_index, int(real[g])), c,
                          dict(type="missed", image=img_index, gt_box=g_boxes[g].tolist(), gt_label=c))

    p_cls, p_ids, p_score, p_true = points.arrays()
    for c in p_cls.tolist():
        positives.setdefault(c, 0)
    base_ap, per_class = _map(p_cls, p_score, p_true, positives)
    etype = np.asarray(e_type, np.int64)
    escore = np.asarray(e_score, np.float64)
    ecls = np.asarray(e_cls, np.int64)
    ecounted = np.asarray(e_counted, bool)
    egt_cls = np.asarray(e_gt_cls, np.int64)
    fixes_tp = np.array([k is not None and best.get(k, (None, None))[1] == pid if t in (_CLS, _LOC) else False
                         for t, k, pid in zip(e_type, e_gt, e_pid)], bool)
    tp_cls, tp_score = p_cls[p_true], p_score[p_true]

    def fixed_map(fix_type: Optional[int] = None, all_fp_to_zero: bool = False, drop_fn: bool = False) -> float:
        """tidecv's fix_errors: every error's point (original, fixed or removed) in error order, then the true
        positives; the positives less the fixed missed boxes (or every false negative, drop_fn)."""
        fixing = etype == fix_type if fix_type is not None else np.zeros(len(etype), bool)
        original = ~fixing & ecounted
        fixed_tp = fixing & fixes_tp if fix_type in (_CLS, _LOC) else np.zeros(len(etype), bool)
        present = original | fixed_tp
        cls = np.where(fixed_tp, egt_cls, ecls)[present]
        score = np.zeros(int(present.sum())) if all_fp_to_zero else escore[present]
        true = fixed_tp[present]
        pos = dict(positives)
        if fix_type == _MISS:
            for c, n in zip(*np.unique(egt_cls[fixing], return_counts=True)):
                pos[int(c)] -= int(n)
        if drop_fn:
            for c, n in fn_count.items():
                pos[c] -= n
        return _map(np.concatenate([cls, tp_cls]),
                    np.concatenate([score, np.ones(len(tp_score)) if all_fp_to_zero else tp_score]),
                    np.concatenate([true, np.ones(len(tp_score), bool)]), pos)[0]

    main = {name: max(fixed_map(t) - base_ap, 0.0) for t, name in enumerate(MAIN_ERRORS)}
    special = {"false_pos": fixed_map(all_fp_to_zero=True) - base_ap, "false_neg": fixed_map(drop_fn=True) - base_ap}
    counts = {name: int((etype == t).sum()) for t, name in enumerate(MAIN_ERRORS)}
    return TideResult(base_ap, main, special, counts, details, per_class, pos_thresh, bg_thresh)
