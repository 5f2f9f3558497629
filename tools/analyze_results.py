#!/usr/bin/env python
"""Error analysis of an evaluated detector: TIDE's breakdown, a confusion matrix, AP per size band and the worst
images, in one self-contained HTML report.

  python tools/analyze_results.py RESULTS_DIR [--cfg FILE] [--set KEY VALUE ...] [--score-thresh 0.5] [--iou 0.5]
                                  [--num-worst 12] [--output DIR]

RESULTS_DIR is a tools/test_net.py output folder (its predictions.json). The ground truth is the config's
DATA.TEST_SET: --cfg, else the config.yaml test_net wrote in RESULTS_DIR, else the run folder's (RESULTS_DIR/..).
Writes into --output (default RESULTS_DIR/analysis): report.html (open it from disk: everything is embedded),
analysis.json, tide_errors.png, confusion_matrix.png / .csv, ap_per_size.png, worst_false_positives.jpg,
largest_missed.jpg (detection/analysis/error_report.py). `tools/test_net.py --analyze` does the same right after
evaluating. Exit codes: 0 done, 2 bad arguments / input.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
logger = logging.getLogger("detection.analyze_results")


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    """The analysis thresholds shared with test_net --analyze."""
    p.add_argument("--score-thresh", type=float, default=0.5, metavar="T",
                   help="confusion matrix: detections scoring at least T (default 0.5)")
    p.add_argument("--iou", type=float, default=0.5, metavar="IOU",
                   help="IoU of a match for TIDE, the confusion matrix and AP (default 0.5)")
    p.add_argument("--num-worst", type=int, default=12, metavar="N",
                   help="false positives and missed boxes drawn in the worst-images sheets (default 12)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analyze_results.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="a tools/test_net.py output folder")
    p.add_argument("--cfg", default=None, metavar="FILE", help="config (default: RESULTS_DIR's or its run's)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY VALUE", dest="overrides", help="config overrides")
    p.add_argument("--output", default=None, metavar="DIR", help="default RESULTS_DIR/analysis")
    add_analysis_arguments(p)
    return p


def check_analysis_arguments(args) -> None:
    from detection.engine.launch import ToolError

    for name in ("score_thresh", "iou"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ToolError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a value in [0, 1]")
    if args.num_worst < 0:
        raise ToolError(f"--num-worst {args.num_worst}: expected N >= 0")


def run_analysis(cfg, records, class_names, predictions, out_dir, args, source) -> dict:
    """analyze_predictions with the tool's thresholds; prints the summary and where the report is."""
    from detection.analysis.error_report import REPORT_FILE, analyze_predictions, format_summary

    summary = analyze_predictions(records, predictions, class_names, out_dir, score_thresh=args.score_thresh,
                                  iou_thresh=args.iou, num_worst=args.num_worst, source=source,
                                  title=f"Error analysis: {cfg.DATA.TEST_SET} ({os.path.basename(cfg.OUTPUT_DIR)})")
    print(format_summary(summary))
    print(f"report: {os.path.abspath(os.path.join(out_dir, REPORT_FILE))}")
    return summary


def _find_config(args) -> str:
    from detection.engine.launch import ToolError

    if args.cfg:
        return args.cfg
    for candidate in (os.path.join(args.results_dir, "config.yaml"),
                      os.path.join(os.path.dirname(os.path.abspath(args.results_dir)), "config.yaml")):
        if os.path.isfile(candidate):
            return candidate
    raise ToolError(f"{args.results_dir}: no config.yaml in it or in its parent run folder; pass --cfg FILE")


def analyze(args) -> int:
    from detection.data.build import build_detection_records
    from detection.engine.launch import ToolError, load_config_from_args

    check_analysis_arguments(args)
    path = os.path.join(args.results_dir, "predictions.json")
    if not os.path.isfile(path):
        raise ToolError(f"{args.results_dir}: no predictions.json (write one with tools/test_net.py --output DIR)")
    try:
        with open(path, encoding="utf-8") as f:
            predictions = json.load(f)
    except json.JSONDecodeError as e:
        raise ToolError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(predictions, list) or any(not isinstance(p, dict) or "detections" not in p for p in predictions):
        raise ToolError(f"{path}: not a detector's predictions.json (a list of {{image_id, file, detections}})")
    args.cfg = _find_config(args)
    cfg = load_config_from_args(args)
    if cfg.MODEL.META_ARCHITECTURE != "faster_rcnn":
        raise ToolError(f"{args.cfg}: the error analysis is for detectors (MODEL.META_ARCHITECTURE faster_rcnn)")
    records = build_detection_records(cfg, is_train=False)
    run_analysis(cfg, records.records, list(records.class_names), predictions,
                 args.output or os.path.join(args.results_dir, "analysis"), args, source=path)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.engine.launch import run_tool
    from detection.utils.logger import setup_logger

    setup_logger(None)
    return run_tool(analyze, args)


if __name__ == "__main__":
    sys.exit(main())
