#!/usr/bin/env python
"""Re-score saved detections without a model (py-faster-rcnn's reval.py).

  python tools/reval.py voc --root VOCdevkit/VOC2007 --split test --dets DIR [--use-07-metric | --no-07-metric]
                            [--rules py-faster-rcnn|devkit] [--classes a,b,...] [--out FILE.json] [--plots DIR]
      DIR holds the devkit's comp4_det_<split>_<class>.txt files (1-based inclusive pixels). Classes default to
      the object names of the split's annotations, sorted; --classes may name only classes of the model's class
      list that test_net records beside its results (DIR/metrics.json), when there is one. The 11-point metric
      defaults to on for VOC years before 2010 (VOC2007), off otherwise (py-faster-rcnn's rule; test_net's
      TEST.VOC_07_METRIC 'auto' is the same rule). --rules: py-faster-rcnn's voc_eval.py (default) or the MATLAB
      devkit's VOCevaldet.m, each exactly (TEST.VOC_RULES). JSON: {"mAP": float, "AP": {class: float},
      "voc_metric": "11-point" | "area", "voc_rules": rules} (fractions; null for a class without non-difficult
      objects, left out of the mAP).

  python tools/reval.py coco --ann instances.json --dets results.json [--out FILE.json]
      pycocotools' COCOeval (bbox). JSON: {"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
      "AR100", "ARs", "ARm", "ARl"}} as pycocotools computes them.

Malformed inputs (missing files, bad lines, unknown image or category ids, malformed JSON) exit with code 2 and a
message naming the file (and line or entry). Importable: `main(argv) -> int`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reval.py", description="Re-score saved detections (VOC or COCO).")
    sub = parser.add_subparsers(dest="dataset", required=True)

    voc = sub.add_parser("voc", help="VOC devkit results files against a VOC folder's annotations")
    voc.add_argument("--root", required=True, help="the VOC year folder, e.g. VOCdevkit/VOC2007")
    voc.add_argument("--split", default="test", help="ImageSets/Main/<split>.txt (default: test)")
    voc.add_argument("--dets", required=True, help="folder of comp4_det_<split>_<class>.txt files")
    metric = voc.add_mutually_exclusive_group()
    metric.add_argument("--use-07-metric", dest="use_07_metric", action="store_true", default=None,
                        help="VOC2007 11-point AP (default for VOC years before 2010)")
    metric.add_argument("--no-07-metric", dest="use_07_metric", action="store_false",
                        help="VOC2010+ area AP (default otherwise)")
    voc.add_argument("--classes", default=None, help="comma-separated class names (default: those annotated, sorted)")
    voc.add_argument("--rules", choices=("py-faster-rcnn", "devkit"), default="py-faster-rcnn",
                     help="py-faster-rcnn: voc_eval.py (IoU > thresh, 11-point at np.arange(0, 1.1, 0.1)); "
                          "devkit: VOCevaldet.m (IoU >= thresh, 0:0.1:1, stable sort). Default py-faster-rcnn")
    voc.add_argument("--iou-thresh", type=float, default=0.5, help="the match threshold of --rules (default 0.5)")
    voc.add_argument("--out", default=None, help="write {\"mAP\", \"AP\"} as JSON here")
    voc.add_argument("--plots", default=None, metavar="DIR", help="save a precision-recall PNG per class here")

    coco = sub.add_parser("coco", help="a COCO results JSON against an instances annotation file")
    coco.add_argument("--ann", required=True, help="instances_<split>.json")
    coco.add_argument("--dets", required=True, help="results JSON: [{image_id, category_id, bbox, score}]")
    coco.add_argument("--out", default=None, help="write {\"bbox\": {...}} as JSON here")
    return parser


def _write_json(path: str, payload: dict) -> None:
    from detection.evaluation.evaluator import json_safe

    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(json_safe(payload), f, indent=2, allow_nan=False)
        f.write("\n")


def _run_voc(args) -> None:
    from detection.evaluation.voc import describe_voc_metric, evaluate_voc_results, format_ap_table

    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise ValueError("--classes names no class")
        _check_recorded_classes(args.dets, classes)
    result = evaluate_voc_results(args.root, args.split, args.dets, classes, use_07_metric=args.use_07_metric,
                                  iou_thresh=args.iou_thresh, rules=args.rules)
    what = describe_voc_metric(result["use_07_metric"], args.rules, args.iou_thresh)
    print(format_ap_table(result["AP"], result["mAP"], result["num_gt"], title=f"{what}, {args.root} {args.split}"))
    print(f"mAP = {result['mAP']:.4f} ({what})")
    if args.plots:
        from detection.evaluation.plots import plot_pr_curves

        plot_pr_curves(result["precision"], result["recall"], result["AP"], args.plots)
    if args.out:
        _write_json(args.out, {"mAP": result["mAP"], "AP": result["AP"], "voc_metric": result["voc_metric"],
                               "voc_rules": result["voc_rules"]})


def _check_recorded_classes(dets: str, classes: list) -> None:
    """ValueError naming both lists when --classes names a class outside the class list test_net recorded beside
    the results files (DIR/metrics.json: the model whose results these are). Files are matched by class name, so a
    subset in any order scores the same detections; a name the model does not have can only pick up a stale file
    of another run."""
    record = os.path.join(dets, "metrics.json")
    try:
        with open(record, encoding="utf-8") as f:
            recorded = json.load(f).get("class_names")
    except (OSError, ValueError, AttributeError):
        return  # results written by something else: nothing to compare with
    if isinstance(recorded, list) and recorded and not set(classes) <= set(recorded):
        raise ValueError(f"--classes {classes} names {sorted(set(classes) - set(recorded))}, not in the class list "
                         f"{recorded} of the model whose results these are ({record})")


def _run_coco(args) -> None:
    from detection.evaluation.coco import coco_evaluate
    from detection.evaluation.voc import format_ap_table

    result = coco_evaluate(args.ann, args.dets)
    print(result["summary"])
    print(format_ap_table(result["per_class_AP"], result["metrics"]["AP"], title="COCO AP @[.50:.95] per class"))
    if args.out:
        _write_json(args.out, {"bbox": result["metrics"]})


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run, return the exit code (0 ok, 2 bad usage or bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage error (or --help)
        return int(e.code or 0)
    from detection.evaluation.evaluator import EvaluationInputError

    try:
        _run_voc(args) if args.dataset == "voc" else _run_coco(args)
    except (EvaluationInputError, ValueError, OSError) as e:
        print(f"reval.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
