"""Evaluation: VOC (py-faster-rcnn's / the devkit's rules), COCO (pycocotools), classification metrics,
precision-recall plots, a common evaluator interface.

Owns turning predictions and annotations into metrics and result files. May import ``detection.data`` (the
readers' formats) and ``detection.utils``; must not import ``detection.modeling`` or ``detection.engine``.

Nothing heavy is imported here: pycocotools and matplotlib load when first used.
"""
from detection.evaluation.coco import COCO_METRIC_NAMES, COCOEvaluator, coco_evaluate, detections_to_coco_results
from detection.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators, EvaluationInputError
from detection.evaluation.voc import (
    VOCEvaluator,
    evaluate_voc_results,
    format_ap_table,
    load_voc_ground_truth,
    read_voc_results,
    voc_ap,
    voc_evaluate,
    write_voc_results,
)


def plot_pr_curves(precision, recall, ap, out_dir, **kwargs):
    """See `detection.evaluation.plots.plot_pr_curves` (imported here lazily: matplotlib is loaded on call)."""
    from detection.evaluation.plots import plot_pr_curves as _plot

    return _plot(precision, recall, ap, out_dir, **kwargs)


__all__ = [
    "DatasetEvaluator", "DatasetEvaluators", "EvaluationInputError",
    "VOCEvaluator", "voc_evaluate", "voc_ap", "write_voc_results", "read_voc_results", "load_voc_ground_truth",
    "evaluate_voc_results", "format_ap_table",
    "COCOEvaluator", "coco_evaluate", "detections_to_coco_results", "COCO_METRIC_NAMES",
    "plot_pr_curves",
]
