"""PASCAL VOC detection evaluation with the rules of py-faster-rcnn's voc_eval.py (default) or of the MATLAB
devkit's VOCevaldet.m, each exactly; the 11-point or area metric by py-faster-rcnn's year rule unless told.

The rules and the box conventions are in detection/evaluation/voc_ap.py (IoU, matching, AP); the devkit's files
in detection/evaluation/voc_io.py (results files, annotations). This module puts them together: ``VOCEvaluator``
(test_net), ``evaluate_voc_results`` (tools/reval.py) and ``format_ap_table``, and re-exports the names the
rest of the toolkit imports from here.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np

from detection.evaluation.evaluator import DatasetEvaluator, EvaluationInputError
from detection.evaluation.voc_ap import (
    ELEVEN_POINT_THRESHOLDS,
    PIXEL_OFFSET,
    VOC_RULES,
    as_detections,
    as_ground_truth,
    bbox_overlaps,
    check_rules,
    concat_table,
    evaluate_table,
    voc_ap,
    voc_evaluate,
)
from detection.evaluation.voc_io import (
    default_use_07_metric,
    load_voc_ground_truth,
    load_voc_ground_truth_inclusive,
    parse_voc_xml,
    read_results_file,
    read_voc_results,
    read_voc_split,
    results_file_name,
    voc_year,
    write_voc_results,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PIXEL_OFFSET", "VOC_RULES", "ELEVEN_POINT_THRESHOLDS", "bbox_overlaps", "voc_ap", "voc_evaluate",
    "write_voc_results", "read_voc_results",
    "results_file_name", "parse_voc_xml", "read_voc_split", "load_voc_ground_truth", "evaluate_voc_results",
    "voc_year", "default_use_07_metric", "VOC_07_METRIC_CHOICES", "resolve_use_07_metric", "describe_voc_metric",
    "metric_fields", "format_ap_table", "VOCEvaluator",
]

VOC_07_METRIC_CHOICES = ("auto", "true", "false")


def resolve_use_07_metric(value, root: str | None) -> bool:
    """The 11-point switch from TEST.VOC_07_METRIC / reval.py: "auto" or None = py-faster-rcnn's year rule
    (`default_use_07_metric(root)`: 11-point for VOC years before 2010), "true"/"false" or a bool = as said."""
    if value is None or value == "auto":
        return default_use_07_metric(root)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"VOC 07 metric: expected one of {list(VOC_07_METRIC_CHOICES)} or a bool, got {value!r}")


def describe_voc_metric(use_07_metric: bool, rules: str, iou_thresh: float = 0.5) -> str:
    """What a VOC mAP means, for printing next to it: "VOC07 11-point AP, py-faster-rcnn rules (IoU > 0.5)"."""
    metric = "VOC07 11-point" if use_07_metric else "VOC2010+ area"
    op = ">=" if check_rules(rules) == "devkit" else ">"
    return f"{metric} AP, {rules} rules (IoU {op} {iou_thresh:g})"


def metric_fields(use_07_metric: bool, rules: str) -> dict:
    """The keys that say which VOC metric and rules produced an mAP: {"voc_metric", "voc_rules"}."""
    return {"voc_metric": "11-point" if use_07_metric else "area", "voc_rules": check_rules(rules)}


def evaluate_voc_results(root: str, split: str, results_dir: str, class_names: Sequence[str] | None = None,
                         use_07_metric=None, iou_thresh: float = 0.5, rules: str = "py-faster-rcnn") -> dict:
    """Re-score the devkit results files in `results_dir` against the annotations of <root>/<split>
    (what tools/reval.py runs). The input (tie) order is each file's line order, as in both references.

    use_07_metric: see `resolve_use_07_metric` (None/"auto": the year rule). rules: "py-faster-rcnn" or "devkit".
    Returns `voc_evaluate`'s dict plus use_07_metric (bool), voc_metric and voc_rules (`metric_fields`).
    """
    check_rules(rules)
    if not os.path.isdir(results_dir):
        raise EvaluationInputError(f"{results_dir}: results folder not found")
    image_ids, gt_boxes, gt_labels, gt_difficult, class_names = load_voc_ground_truth_inclusive(root, split,
                                                                                                class_names)
    use_07_metric = resolve_use_07_metric(use_07_metric, root)
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    parts = []
    for c, name in enumerate(class_names, start=1):
        ids, scores, boxes = read_results_file(os.path.join(results_dir, results_file_name(split, name)), index)
        parts.append((np.array([index[i] for i in ids], dtype=np.int64), np.full(len(ids), c, np.int64), scores, boxes))
    table = concat_table(parts)
    result = evaluate_table(gt_boxes, gt_labels, gt_difficult, *table, class_names, iou_thresh, use_07_metric,
                            rules)
    result["use_07_metric"] = bool(use_07_metric)
    result.update(metric_fields(use_07_metric, rules))
    return result


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
    use_07_metric: None or "auto" picks `default_use_07_metric(root)` (11-point for VOC years before 2010; area
        without a root); "true"/"false" or a bool as said. The config's TEST.VOC_07_METRIC is passed here.
    rules: "py-faster-rcnn" (voc_eval.py, default) or "devkit" (VOCevaldet.m); the config's TEST.VOC_RULES.
    output_dir: when set, `evaluate` also writes the devkit results files (comp4_det_<split>_<class>.txt),
        and, with plots=True, a precision-recall PNG per class there.

    Only processed images are evaluated (a warning says when that is fewer than the split).
    `evaluate()` -> {"mAP": float, "AP": {class: float}, "voc_metric": "11-point" | "area", "voc_rules": rules}
    (fractions, NaN for classes without objects); the full `voc_evaluate` result stays in `self.result`.
    """

    def __init__(self, root: str | None = None, split: str | None = None, class_names: Sequence[str] | None = None,
                 *, use_07_metric=None, iou_thresh: float = 0.5, output_dir: str | None = None,
                 plots: bool = False, rules: str = "py-faster-rcnn"):
        if root is None and class_names is None:
            raise ValueError("VOCEvaluator: class_names is needed when the ground truth comes from records (root=None)")
        if root is not None and split is None:
            raise ValueError("VOCEvaluator: split is needed with root")
        self.root, self.split = root, split
        self.class_names = None if class_names is None else list(class_names)
        self.use_07_metric = resolve_use_07_metric(use_07_metric, root)
        self.rules = check_rules(rules)
        self.iou_thresh = iou_thresh
        self.output_dir = output_dir
        self.plots = plots
        self._gt_cache = None
        self.result: dict | None = None
        self.reset()

    def reset(self) -> None:
        self._dets: dict[str, dict] = {}
        self._gts: dict[str, dict] = {}

    def process(self, records: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        for record, output in zip(records, outputs, strict=True):
            image_id = str(record["image_id"])
            boxes, scores, labels = as_detections(output, f"output of image {image_id}")
            self._dets[image_id] = dict(boxes=boxes, scores=scores, labels=labels)
            if self.root is None:
                b, l, d = as_ground_truth(record, f"record of image {image_id}")
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
        self.result = voc_evaluate(dets, gts, self.class_names, self.iou_thresh, self.use_07_metric, self.rules)
        metrics = {"mAP": self.result["mAP"], "AP": dict(self.result["AP"]),
                   **metric_fields(self.use_07_metric, self.rules)}
        what = describe_voc_metric(self.use_07_metric, self.rules, self.iou_thresh)
        logger.info("\n%s", format_ap_table(self.result["AP"], self.result["mAP"], self.result["num_gt"],
                                            title=f"{what}, {len(ids)} images"))
        if self.output_dir:
            write_voc_results(dets, ids, self.class_names, self.output_dir, self.split or "test")
            if self.plots:
                from detection.evaluation.plots import plot_pr_curves

                plot_pr_curves(self.result["precision"], self.result["recall"], self.result["AP"], self.output_dir)
        return metrics
