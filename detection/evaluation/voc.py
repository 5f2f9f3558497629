"""PASCAL VOC detection evaluation with the official devkit's rules (VOCevaldet.m, py-faster-rcnn's voc_eval.py).

Conventions
-----------
The toolkit's boxes are xyxy float in continuous pixels (width = x2 - x1). The devkit works in VOC's 1-based
inclusive pixels (width = xmax - xmin + 1); this module converts at its borders only::

    xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2        (and back: x1 = xmin - 1, ..., x2 = xmax)

and computes IoU in the devkit's way on the inclusive boxes (``iw = min(xmax) - max(xmin) + 1``, union of
``(xmax - xmin + 1) * (ymax - ymin + 1)`` areas). Labels are 1..K in the order of ``class_names``.

Rules (per class, over all images)
----------------------------------
* Detections are sorted by descending score with a *stable* sort (MATLAB's ``sort``): ties keep their input order,
  i.e. results-file line order, or (image index, detection index) for ``voc_evaluate``.
* Each detection is compared with the ground-truth objects of its class in its image, difficult ones included;
  only objects that intersect it count, and the first one with the highest IoU is its match (``jmax``).
* If ``ovmax > iou_thresh`` (strictly, as py-faster-rcnn; the MATLAB devkit uses ``>=``, available with
  ``match_at_threshold=True``): a difficult match makes the detection neither TP nor FP (ignored); otherwise the
  first detection of that object is a TP and later ones are FPs (duplicates). Anything else is a FP.
  The match does not depend on whether the best object was already taken (the devkit's rule), so the greedy pass
  is a vectorised "first occurrence" per object here.
* ``npos`` counts the non-difficult objects; recall = cumTP / npos, precision = cumTP / max(cumTP + cumFP, eps).
* AP: VOC2010+ area under the monotone precision envelope (default), or VOC2007's 11-point average
  (``use_07_metric``) of max precision at recall >= t for t in {0, 0.1, ..., 1}. The thresholds are the exact
  decimals k / 10: py-faster-rcnn's ``np.arange(0, 1.1, 0.1)`` and MATLAB's ``0:0.1:1`` carry float error
  (0.30000000000000004, ...) that can drop a recall of exactly 0.3 (or 0.6 / 0.7 in py-faster-rcnn).
* A class with no non-difficult object (npos == 0) has AP = NaN (reported, not 0) and is left out of the mAP;
  with no such class at all the mAP is NaN.
"""
from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from typing import Mapping, Sequence

import numpy as np

from detection.evaluation.evaluator import DatasetEvaluator, EvaluationInputError, to_numpy

try:  # compiled by setup.py from csrc/cython/box_ops.pyx; the numpy fallback below gives identical results
    from detection.cython_ops import bbox_overlaps as _bbox_overlaps_cython
except ImportError:  # pragma: no cover - depends on the build
    _bbox_overlaps_cython = None

logger = logging.getLogger(__name__)

__all__ = [
    "bbox_overlaps", "voc_ap", "voc_evaluate", "write_voc_results", "read_voc_results", "results_file_name",
    "parse_voc_xml", "read_voc_split", "load_voc_ground_truth", "evaluate_voc_results", "voc_year",
    "default_use_07_metric", "format_ap_table", "VOCEvaluator",
]

PIXEL_OFFSET = 1.0  # the devkit's inclusive-pixel convention: width = xmax - xmin + 1


# ---------------------------------------------------------------------------------------------------------------
# IoU and AP
# ---------------------------------------------------------------------------------------------------------------

def _bbox_overlaps_numpy(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """Reference of `detection.cython_ops.bbox_overlaps` with the same arithmetic (bit-identical results)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    q = np.asarray(query_boxes, dtype=np.float64).reshape(-1, 4)
    q_area = (q[:, 2] - q[:, 0] + PIXEL_OFFSET) * (q[:, 3] - q[:, 1] + PIXEL_OFFSET)
    b_area = (b[:, 2] - b[:, 0] + PIXEL_OFFSET) * (b[:, 3] - b[:, 1] + PIXEL_OFFSET)
    iw = np.minimum(b[:, None, 2], q[None, :, 2]) - np.maximum(b[:, None, 0], q[None, :, 0]) + PIXEL_OFFSET
    ih = np.minimum(b[:, None, 3], q[None, :, 3]) - np.maximum(b[:, None, 1], q[None, :, 1]) + PIXEL_OFFSET
    valid = (iw > 0) & (ih > 0)
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = inter / (b_area[:, None] + q_area[None, :] - inter)
    return np.where(valid, ov, 0.0)


def bbox_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """IoU of boxes [N, 4] and query_boxes [K, 4], x1 y1 x2 y2 in VOC's *inclusive* pixels (+1 in widths)
    -> [N, K] float64 (0 where the boxes do not intersect). Uses `detection.cython_ops` when it is built."""
    boxes = np.ascontiguousarray(boxes, dtype=np.float64).reshape(-1, 4)
    query_boxes = np.ascontiguousarray(query_boxes, dtype=np.float64).reshape(-1, 4)
    if _bbox_overlaps_cython is not None:
        return _bbox_overlaps_cython(boxes, query_boxes)
    return _bbox_overlaps_numpy(boxes, query_boxes)


_ELEVEN_POINTS = np.arange(11) / 10.0  # exactly 0.0, 0.1, ..., 1.0 (see the module docstring)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from recall [D] and precision [D] (cumulative over score-sorted detections; recall nondecreasing).

    use_07_metric: VOC2007's 11-point AP; otherwise the VOC2010+ area under the precision envelope.
    """
    rec = np.asarray(rec, dtype=np.float64).ravel()
    prec = np.asarray(prec, dtype=np.float64).ravel()
    if use_07_metric:
        # max precision at recall >= t == suffix max of precision from the first index with rec >= t
        suffix_max = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
        first = np.searchsorted(rec, _ELEVEN_POINTS, side="left")
        ap = 0.0
        for k in first:  # accumulate in the devkit's order: ap = ap + p / 11
            p = suffix_max[k] if k < rec.size else 0.0
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# ---------------------------------------------------------------------------------------------------------------
# The evaluation core, on inclusive-pixel float64 boxes
# ---------------------------------------------------------------------------------------------------------------

def _evaluate_table(gt_boxes, gt_labels, gt_difficult, det_image, det_labels, det_scores, det_boxes,
                    class_names, iou_thresh, use_07_metric, match_at_threshold) -> dict:
    """Core of the evaluation.

    gt_*: per image lists: boxes [G_i, 4] float64 inclusive pixels, labels [G_i] int64 in 1..K, difficult [G_i] bool.
    det_*: one flat table over all images: image index [D] int64, labels [D] 1..K, scores [D], boxes [D, 4] float64
    inclusive pixels. Within a class, the table order is the tie order of the stable score sort.
    """
    gt_counts = np.array([len(b) for b in gt_labels], dtype=np.int64)
    gt_offsets = np.concatenate(([0], np.cumsum(gt_counts)))
    all_gt_labels = np.concatenate(list(gt_labels) + [np.zeros(0, np.int64)]).astype(np.int64)
    all_gt_difficult = np.concatenate(list(gt_difficult) + [np.zeros(0, bool)]).astype(bool)

    D = det_image.size
    ovmax = np.full(D, -np.inf)
    jmax = np.full(D, -1, dtype=np.int64)  # index into the concatenated ground truth
    if D:
        order = np.argsort(det_image, kind="stable")
        images, starts = np.unique(det_image[order], return_index=True)
        ends = np.append(starts[1:], D)
        for i, s, e in zip(images.tolist(), starts.tolist(), ends.tolist()):
            if gt_counts[i] == 0:
                continue
            idx = order[s:e]
            ious = bbox_overlaps(det_boxes[idx], gt_boxes[i])  # [m, G_i]
            # like the devkit: only objects of the same class that intersect the detection are candidates
            ious = np.where((det_labels[idx][:, None] == gt_labels[i][None, :]) & (ious > 0), ious, -np.inf)
            j = ious.argmax(axis=1)  # the first maximum, as `if ov > ovmax` in the devkit
            ov = ious[np.arange(idx.size), j]
            ovmax[idx] = ov
            jmax[idx] = np.where(np.isfinite(ov), gt_offsets[i] + j, -1)

    precision, recall, ap, num_gt = {}, {}, {}, {}
    for c, name in enumerate(class_names, start=1):
        npos = int(np.count_nonzero((all_gt_labels == c) & ~all_gt_difficult))
        sel = np.flatnonzero(det_labels == c)
        sel = sel[np.argsort(-det_scores[sel], kind="stable")]
        ov, gi = ovmax[sel], jmax[sel]
        matched = (ov >= iou_thresh) if match_at_threshold else (ov > iou_thresh)
        matched &= gi >= 0
        ignored = np.zeros(sel.size, dtype=bool)
        ignored[matched] = all_gt_difficult[gi[matched]]
        candidates = np.flatnonzero(matched & ~ignored)
        tp = np.zeros(sel.size)
        _, first = np.unique(gi[candidates], return_index=True)  # first (highest-scored) detection per object
        tp[candidates[first]] = 1.0
        fp = ((~matched) | (matched & ~ignored & (tp == 0))).astype(np.float64)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / float(npos) if npos > 0 else np.full(sel.size, np.nan)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        precision[name], recall[name], num_gt[name] = prec, rec, npos
        ap[name] = voc_ap(rec, prec, use_07_metric) if npos > 0 else float("nan")
    valid = [ap[n] for n in class_names if num_gt[n] > 0]
    m_ap = float(np.mean(valid)) if valid else float("nan")
    return dict(mAP=m_ap, AP=ap, precision=precision, recall=recall, num_gt=num_gt)


def _to_inclusive(boxes_continuous: np.ndarray) -> np.ndarray:
    """[N, 4] continuous xyxy -> float64 VOC inclusive pixels (x1 + 1, y1 + 1, x2, y2)."""
    b = np.asarray(boxes_continuous, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] += PIXEL_OFFSET
    return b


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"{what}: labels must be in 1..{num_classes} (0 is background), "
                         f"got {np.unique(labels).tolist()}")


def _as_det(det: Mapping, where: str):
    boxes = to_numpy(det["boxes"], np.float64).reshape(-1, 4)
    scores = to_numpy(det["scores"], np.float64).reshape(-1)
    labels = to_numpy(det["labels"]).reshape(-1).astype(np.int64)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"{where}: boxes, scores and labels differ in length "
                         f"({len(boxes)}, {len(scores)}, {len(labels)})")
    return boxes, scores, labels


def _as_gt(gt: Mapping, where: str):
    boxes = to_numpy(gt["boxes"], np.float64).reshape(-1, 4)
    labels = to_numpy(gt["labels"]).reshape(-1).astype(np.int64)
    difficult = gt.get("difficult")
    difficult = np.zeros(len(labels), bool) if difficult is None else to_numpy(difficult).reshape(-1).astype(bool)
    if not (len(boxes) == len(labels) == len(difficult)):
        raise ValueError(f"{where}: boxes, labels and difficult differ in length "
                         f"({len(boxes)}, {len(labels)}, {len(difficult)})")
    return boxes, labels, difficult


def voc_evaluate(detections: Sequence[Mapping], ground_truth: Sequence[Mapping], class_names: Sequence[str],
                 iou_thresh: float = 0.5, use_07_metric: bool = False, match_at_threshold: bool = False) -> dict:
    """VOC AP per class and mAP with the devkit's rules (see the module docstring).

    detections[i]: dict(boxes [M, 4] xyxy continuous pixels, scores [M], labels [M] in 1..K) for image i
        (numpy or torch).
    ground_truth[i]: dict(boxes [G, 4] xyxy continuous pixels, labels [G] in 1..K, difficult [G] bool, optional)
        for the same image i; a record of the data reader fits.
    class_names: the K class names; label k is class_names[k - 1].

    Returns dict(mAP=float, AP={class: float}, precision={class: [D_c]}, recall={class: [D_c]},
    num_gt={class: npos}): fractions in 0..1; precision/recall are cumulative over the class's score-sorted
    detections (ignored ones included, as in the devkit); AP is NaN for a class with npos == 0 (excluded from mAP).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"voc_evaluate: {len(detections)} detection entries for {len(ground_truth)} images")
    K = len(class_names)
    gt_boxes, gt_labels, gt_difficult = [], [], []
    for i, gt in enumerate(ground_truth):
        b, l, d = _as_gt(gt, f"ground_truth[{i}]")
        _check_labels(l, K, f"ground_truth[{i}]")
        gt_boxes.append(_to_inclusive(b))
        gt_labels.append(l)
        gt_difficult.append(d)
    parts = []
    for i, det in enumerate(detections):
        b, s, l = _as_det(det, f"detections[{i}]")
        _check_labels(l, K, f"detections[{i}]")
        parts.append((np.full(len(l), i, dtype=np.int64), l, s, _to_inclusive(b)))
    det_image, det_labels, det_scores, det_boxes = _concat_table(parts)
    return _evaluate_table(gt_boxes, gt_labels, gt_difficult, det_image, det_labels, det_scores, det_boxes,
                           list(class_names), iou_thresh, use_07_metric, match_at_threshold)


def _concat_table(parts):
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4))
    image, labels, scores, boxes = zip(*parts)
    return (np.concatenate(image).astype(np.int64), np.concatenate(labels).astype(np.int64),
            np.concatenate(scores).astype(np.float64), np.concatenate(boxes).astype(np.float64).reshape(-1, 4))


# ---------------------------------------------------------------------------------------------------------------
# The devkit's results files: comp4_det_<split>_<class>.txt, lines "image_id score xmin ymin xmax ymax"
# ---------------------------------------------------------------------------------------------------------------

def results_file_name(split: str, class_name: str, competition: str = "comp4") -> str:
    """The devkit's results file name, e.g. comp4_det_test_aeroplane.txt."""
    return f"{competition}_det_{split}_{class_name}.txt"


def write_voc_results(dets: Sequence[Mapping], image_ids: Sequence[str], class_names: Sequence[str],
                      out_dir: str, split: str) -> list[str]:
    """Write one results file per class (written even when empty, as the devkit expects every class).

    dets[i]: dict(boxes [M, 4] xyxy continuous, scores [M], labels [M] in 1..K) of image image_ids[i].
    Lines are ``image_id score xmin ymin xmax ymax`` with 1-based inclusive pixels (xmin = x1 + 1, xmax = x2),
    scores as %.6f and boxes as %.1f, in image order then detection order. Returns the paths, in class order.
    """
    if len(dets) != len(image_ids):
        raise ValueError(f"write_voc_results: {len(dets)} detection entries for {len(image_ids)} image ids")
    os.makedirs(out_dir, exist_ok=True)
    K = len(class_names)
    lines: list[list[str]] = [[] for _ in range(K)]
    for i, (det, image_id) in enumerate(zip(dets, image_ids)):
        boxes, scores, labels = _as_det(det, f"dets[{i}]")
        _check_labels(labels, K, f"dets[{i}]")
        incl = _to_inclusive(boxes)
        for lab, s, b in zip(labels.tolist(), scores.tolist(), incl.tolist()):
            lines[lab - 1].append(f"{image_id} {s:.6f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n")
    paths = []
    for c, name in enumerate(class_names):
        path = os.path.join(out_dir, results_file_name(split, name))
        with open(path, "w") as f:
            f.writelines(lines[c])
        paths.append(path)
    return paths


def _read_results_file(path: str, known_ids=None):
    """Parse one results file -> (image ids list[str], scores [n] float64, boxes [n, 4] float64 inclusive pixels).

    Malformed lines (not 6 fields, non-numeric or non-finite values) and image ids outside `known_ids` (when
    given) raise EvaluationInputError naming the file and the 1-based line number. Blank lines are skipped.
    """
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: results file not found")
    ids, values, line_nos = [], [], []
    with open(path, encoding="utf-8") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise EvaluationInputError(f"{path}: not a text results file (byte {e.start} is not UTF-8)") from None
        for line_no, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise EvaluationInputError(
                    f"{path}:{line_no}: expected 'image_id score xmin ymin xmax ymax', got {line.strip()!r}")
            ids.append(parts[0])
            values.append(parts[1:])
            line_nos.append(line_no)
    try:
        arr = np.array(values, dtype=np.float64).reshape(-1, 5)
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    except ValueError:  # find the line at fault
        arr, bad = None, None
        for k, v in enumerate(values):
            try:
                [float(x) for x in v]
            except ValueError:
                raise EvaluationInputError(
                    f"{path}:{line_nos[k]}: non-numeric value in {' '.join([ids[k]] + v)!r}") from None
    if bad is not None and bad.size:
        k = int(bad[0])
        raise EvaluationInputError(f"{path}:{line_nos[k]}: non-finite value in {' '.join([ids[k]] + values[k])!r}")
    if known_ids is not None:
        for k, image_id in enumerate(ids):
            if image_id not in known_ids:
                raise EvaluationInputError(f"{path}:{line_nos[k]}: unknown image id {image_id!r} (not in the split)")
    return ids, arr[:, 0].copy(), arr[:, 1:].copy()


def read_voc_results(results_dir: str, split: str, class_names: Sequence[str],
                     image_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """Read the comp4_det_<split>_<class>.txt files of `results_dir` (every class's file must exist).

    Returns {image_id: dict(boxes [M, 4] float32 xyxy continuous (x1 = xmin - 1, x2 = xmax), scores [M] float32,
    labels [M] int64 in 1..K)}; with `image_ids`, exactly those keys in that order (empty arrays for images with
    no detection) and unknown ids are errors; otherwise the images met, in order of first appearance.
    Detections of an image come class by class, each in file line order.
    """
    known = None if image_ids is None else {str(i): k for k, i in enumerate(image_ids)}
    all_ids, labels, scores, boxes = [], [], [], []
    for c, name in enumerate(class_names, start=1):
        ids, s, b = _read_results_file(os.path.join(results_dir, results_file_name(split, name)), known)
        all_ids += ids
        labels.append(np.full(len(ids), c, np.int64))
        scores.append(s)
        boxes.append(b)
    if known is None:
        known = {}
        for i in all_ids:
            known.setdefault(i, len(known))
    order_ids = list(known)
    image_index = np.fromiter((known[i] for i in all_ids), dtype=np.int64, count=len(all_ids))
    labels = np.concatenate(labels + [np.zeros(0, np.int64)])
    scores = np.concatenate(scores + [np.zeros(0)]).astype(np.float32)
    boxes = np.concatenate(boxes + [np.zeros((0, 4))]).reshape(-1, 4)
    boxes[:, :2] -= PIXEL_OFFSET
    boxes = boxes.astype(np.float32)
    order = np.argsort(image_index, kind="stable")  # class by class, line order, within each image
    bounds = np.searchsorted(image_index[order], np.arange(len(order_ids) + 1))
    out = {}
    for k, image_id in enumerate(order_ids):
        sel = order[bounds[k]:bounds[k + 1]]
        out[image_id] = dict(boxes=boxes[sel], scores=scores[sel], labels=labels[sel])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Annotations of a VOC folder (VOCdevkit/VOC2007: Annotations/*.xml, ImageSets/Main/<split>.txt)
# ---------------------------------------------------------------------------------------------------------------

def parse_voc_xml(path: str) -> dict:
    """Parse one VOC annotation file (stdlib only) -> dict(width, height, objects=[dict(name, bbox, difficult)])
    with bbox = [xmin, ymin, xmax, ymax] as float in VOC's 1-based inclusive pixels, as written in the file.

    Not detection.data.voc.parse_voc_xml: the data reader clips boxes to the image, drops degenerate ones and
    rejects unknown class names, while the devkit scores against the raw annotations of any subset of classes.

    A missing <difficult> counts as 0 (the devkit's PASreadrecord); missing coordinates are errors naming the file.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: annotation file not found") from None
    except ET.ParseError as e:
        raise EvaluationInputError(f"{path}: malformed XML: {e}") from None

    def number(node, tag, default=None):
        text = node.findtext(tag) if node is not None else None
        if text is None or not text.strip():
            if default is not None:
                return default
            raise EvaluationInputError(f"{path}: missing <{tag}>")
        try:
            return float(text)
        except ValueError:
            raise EvaluationInputError(f"{path}: <{tag}> is not a number: {text!r}") from None

    size = root.find("size")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise EvaluationInputError(f"{path}: object {k} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise EvaluationInputError(f"{path}: object {k} ({name}) has no <bndbox>")
        bbox = [number(box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        objects.append(dict(name=name, bbox=bbox, difficult=bool(int(number(obj, "difficult", 0.0)))))
    width = int(number(size, "width", -1.0)) if size is not None else -1
    height = int(number(size, "height", -1.0)) if size is not None else -1
    return dict(width=width if width >= 0 else None, height=height if height >= 0 else None, objects=objects)


def read_voc_split(root: str, split: str) -> list[str]:
    """Image ids listed in <root>/ImageSets/Main/<split>.txt (first token of each non-blank line)."""
    if not os.path.isdir(root):
        raise EvaluationInputError(f"{root}: VOC root folder not found")
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: split file not found")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def _load_gt_inclusive(root: str, split: str, class_names: Sequence[str] | None):
    """(image ids, boxes list [G_i, 4] float64 inclusive, labels list, difficult list, class names)."""
    image_ids = read_voc_split(root, split)
    parsed = [parse_voc_xml(os.path.join(root, "Annotations", f"{i}.xml")) for i in image_ids]
    if class_names is None:
        class_names = sorted({o["name"] for p in parsed for o in p["objects"]})
    index = {name: k for k, name in enumerate(class_names, start=1)}
    boxes, labels, difficult = [], [], []
    for p in parsed:
        objs = [o for o in p["objects"] if o["name"] in index]  # objects of other classes are not evaluated
        boxes.append(np.array([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4))
        labels.append(np.array([index[o["name"]] for o in objs], dtype=np.int64))
        difficult.append(np.array([o["difficult"] for o in objs], dtype=bool))
    return image_ids, boxes, labels, difficult, list(class_names)


def load_voc_ground_truth(root: str, split: str, class_names: Sequence[str] | None = None):
    """Ground truth of a VOC split, difficult objects included -> (image_ids, ground_truth, class_names).

    ground_truth[i] = dict(boxes [G, 4] float64 xyxy continuous (x1 = xmin - 1, x2 = xmax), labels [G] int64 in
    1..K, difficult [G] bool). class_names defaults to the object names found in the split, sorted; objects of
    other classes are left out.
    """
    image_ids, boxes, labels, difficult, class_names = _load_gt_inclusive(root, split, class_names)
    gt = []
    for b, l, d in zip(boxes, labels, difficult):
        b = b.copy()
        b[:, :2] -= PIXEL_OFFSET
        gt.append(dict(boxes=b, labels=l, difficult=d))
    return image_ids, gt, class_names


def voc_year(root: str) -> int | None:
    """The year of a VOC folder from its name (VOCdevkit/VOC2007 -> 2007), None when it has none."""
    m = re.search(r"VOC(\d{4})", os.path.basename(os.path.normpath(root)))
    return int(m.group(1)) if m else None


def default_use_07_metric(root: str | None) -> bool:
    """py-faster-rcnn's default: the 11-point metric for VOC years before 2010 (2007: True), else area AP."""
    year = voc_year(root) if root else None
    return year is not None and year < 2010


def evaluate_voc_results(root: str, split: str, results_dir: str, class_names: Sequence[str] | None = None,
                         use_07_metric: bool | None = None, iou_thresh: float = 0.5,
                         match_at_threshold: bool = False) -> dict:
    """Re-score the devkit results files in `results_dir` against the annotations of <root>/<split>
    (what tools/reval.py runs). Tie order is each file's line order, as in the devkit.

    use_07_metric None: `default_use_07_metric(root)`. Returns `voc_evaluate`'s dict plus use_07_metric.
    """
    if not os.path.isdir(results_dir):
        raise EvaluationInputError(f"{results_dir}: results folder not found")
    image_ids, gt_boxes, gt_labels, gt_difficult, class_names = _load_gt_inclusive(root, split, class_names)
    if use_07_metric is None:
        use_07_metric = default_use_07_metric(root)
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    parts = []
    for c, name in enumerate(class_names, start=1):
        ids, scores, boxes = _read_results_file(os.path.join(results_dir, results_file_name(split, name)), index)
        parts.append((np.array([index[i] for i in ids], dtype=np.int64), np.full(len(ids), c, np.int64), scores, boxes))
    table = _concat_table(parts)
    result = _evaluate_table(gt_boxes, gt_labels, gt_difficult, *table, class_names, iou_thresh, use_07_metric,
                             match_at_threshold)
    result["use_07_metric"] = bool(use_07_metric)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------

def format_ap_table(ap: Mapping[str, float], mean_ap: float | None = None, num_gt: Mapping[str, int] | None = None,
                    title: str | None = None) -> str:
    """An aligned text table of per-class AP (in percent, 2 decimals; NaN as 'n/a'), with the mean last."""
    def pct(v):
        return "n/a" if v is None or not np.isfinite(v) else f"{100.0 * v:.2f}"

    rows = [(name, pct(v), "" if num_gt is None else str(num_gt.get(name, ""))) for name, v in ap.items()]
    if mean_ap is not None:
        rows.append(("mAP", pct(mean_ap), "" if num_gt is None else str(sum(num_gt.values()))))
    header = ("class", "AP (%)", "#gt" if num_gt is not None else "")
    w0 = max(len(header[0]), *(len(r[0]) for r in rows)) if rows else len(header[0])
    w1 = max(len(header[1]), *(len(r[1]) for r in rows)) if rows else len(header[1])
    w2 = max(len(header[2]), *(len(r[2]) for r in rows)) if rows else len(header[2])

    def fmt(r):
        return f"{r[0]:<{w0}}  {r[1]:>{w1}}" + (f"  {r[2]:>{w2}}" if num_gt is not None else "")

    sep = "-" * len(fmt(header))
    lines = ([title] if title else []) + [fmt(header), sep] + [fmt(r) for r in rows[: len(ap)]]
    if mean_ap is not None:
        lines += [sep, fmt(rows[-1])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------------------------

class VOCEvaluator(DatasetEvaluator):
    """VOC mAP of the processed images.

    root, split: the VOC folder (e.g. VOCdevkit/VOC2007) and split whose annotations (difficult objects included)
        are the ground truth; with root None the ground truth comes from the processed records' boxes, labels and
        difficult (the records must then keep their difficult objects; the data reader also clips boxes to the
        image, which the devkit does not).
    class_names: label k is class_names[k - 1]; defaults to the split's object names, sorted (VOC's 20 classes).
    use_07_metric: None picks `default_use_07_metric(root)` (11-point for VOC2007); the config's
        TEST.VOC_07_METRIC is passed here by whoever builds the evaluator.
    output_dir: when set, `evaluate` also writes the devkit results files (comp4_det_<split>_<class>.txt),
        and, with plots=True, a precision-recall PNG per class there.

    Only processed images are evaluated (a warning says when that is fewer than the split).
    `evaluate()` -> {"mAP": float, "AP": {class: float}} (fractions, NaN for classes without objects);
    the full `voc_evaluate` result stays in `self.result`.
    """

    def __init__(self, root: str | None = None, split: str | None = None, class_names: Sequence[str] | None = None,
                 *, use_07_metric: bool | None = None, iou_thresh: float = 0.5, output_dir: str | None = None,
                 plots: bool = False, match_at_threshold: bool = False):
        if root is None and class_names is None:
            raise ValueError("VOCEvaluator: class_names is needed when the ground truth comes from records (root=None)")
        if root is not None and split is None:
            raise ValueError("VOCEvaluator: split is needed with root")
        self.root, self.split = root, split
        self.class_names = None if class_names is None else list(class_names)
        self.use_07_metric = default_use_07_metric(root) if use_07_metric is None else bool(use_07_metric)
        self.iou_thresh = iou_thresh
        self.output_dir = output_dir
        self.plots = plots
        self.match_at_threshold = match_at_threshold
        self._gt_cache = None
        self.result: dict | None = None
        self.reset()

    def reset(self) -> None:
        self._dets: dict[str, dict] = {}
        self._gts: dict[str, dict] = {}

    def process(self, records: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        for record, output in zip(records, outputs, strict=True):
            image_id = str(record["image_id"])
            boxes, scores, labels = _as_det(output, f"output of image {image_id}")
            self._dets[image_id] = dict(boxes=boxes, scores=scores, labels=labels)
            if self.root is None:
                b, l, d = _as_gt(record, f"record of image {image_id}")
                self._gts[image_id] = dict(boxes=b, labels=l, difficult=d)

    def _ground_truth(self):
        if self.root is None:
            ids = list(self._dets)
            return ids, [self._gts[i] for i in ids], self.class_names
        if self._gt_cache is None:
            self._gt_cache = load_voc_ground_truth(self.root, self.split, self.class_names)
        return self._gt_cache

    def evaluate(self) -> dict:
        split_ids, split_gt, class_names = self._ground_truth()
        self.class_names = list(class_names)
        index = {image_id: i for i, image_id in enumerate(split_ids)}
        unknown = [i for i in self._dets if i not in index]
        if unknown:
            raise EvaluationInputError(f"VOCEvaluator: images not in split {self.split!r}: {unknown[:5]}")
        ids = [i for i in split_ids if i in self._dets]
        if len(ids) < len(split_ids):
            logger.warning("VOC evaluation of %d of the %d images of split %r", len(ids), len(split_ids), self.split)
        dets = [self._dets[i] for i in ids]
        gts = [split_gt[index[i]] for i in ids]
        self.result = voc_evaluate(dets, gts, self.class_names, self.iou_thresh, self.use_07_metric,
                                   self.match_at_threshold)
        metrics = {"mAP": self.result["mAP"], "AP": dict(self.result["AP"])}
        metric_name = "VOC07 11-point" if self.use_07_metric else "VOC area"
        logger.info("\n%s", format_ap_table(self.result["AP"], self.result["mAP"], self.result["num_gt"],
                                            title=f"{metric_name} AP at IoU > {self.iou_thresh}, {len(ids)} images"))
        if self.output_dir:
            write_voc_results(dets, ids, self.class_names, self.output_dir, self.split or "test")
            if self.plots:
                from detection.evaluation.plots import plot_pr_curves

                plot_pr_curves(self.result["precision"], self.result["recall"], self.result["AP"], self.output_dir)
        return metrics
