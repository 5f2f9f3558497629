#!/usr/bin/env python
"""Evaluate a trained model on DATA.TEST_SET: the dataset's metrics, saved predictions and plots.

  python tools/test_net.py --cfg FILE --weights CKPT [--set KEY VALUE ...] [--output DIR]
  python tools/test_net.py --cfg FILE --weights CKPT --set TEST.SCALES '[400,600,800]' TEST.FLIP True  # TTA
  torchrun --nproc_per_node 8 tools/test_net.py --cfg FILE --weights CKPT      # shards the test set

--weights defaults to OUTPUT_DIR's last checkpoint; --fast runs the fast inference path (detection/export/fast.py:
BatchNorm folded into the convolutions, same detections). Writes into --output (default OUTPUT_DIR/inference):
metrics.json (with the model's class_names), predictions.json (every image's outputs: detections or top labels),
and the evaluator's files: VOC devkit results files comp4_det_<split>_<class>.txt and precision-recall PNGs, or
the COCO results JSON coco_instances_results.json (classifier: confusion matrix, confidence sheet and CSV), and
config.yaml (the config used). --analyze adds the detection error analysis in <output>/analysis
(tools/analyze_results.py: TIDE errors, confusion matrix, AP per size band, worst images, one HTML report).
A class list (DATA.CLASSES, or the test set's own) that differs from the checkpoint's, in names or order, is
refused: the model's labels would be scored under other names.
Exit codes: 0 done, 2 bad arguments / config / input.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
logger = logging.getLogger("detection.test_net")


def _parser() -> argparse.ArgumentParser:
    from detection.engine.launch import add_config_arguments

    p = argparse.ArgumentParser(prog="test_net.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--weights", default=None, metavar="CKPT",
                   help="checkpoint to evaluate (default: OUTPUT_DIR's last checkpoint)")
    p.add_argument("--output", default=None, metavar="DIR", help="results folder (default: OUTPUT_DIR/inference)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fast", action="store_true",
                   help="fold BatchNorm into the convolutions, channels_last, inference_mode (same detections)")
    p.add_argument("--analyze", action="store_true", help="also write the error analysis report (detectors)")
    from analyze_results import add_analysis_arguments

    add_analysis_arguments(p)
    return p


def _headline(metrics: dict) -> str:
    parts = [f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
    text = ", ".join(parts[:6])
    if "voc_metric" in metrics:  # which VOC metric and rules the mAP is (TEST.VOC_07_METRIC, TEST.VOC_RULES)
        text += f" (VOC {metrics['voc_metric']} metric, {metrics.get('voc_rules')} rules)"
    return text


def test(args) -> int:
    import contextlib

    import torch

    from detection.config import dump_config
    from detection.utils.atomic_io import atomic_write_text, write_json
    from detection.engine.distributed import is_main_process
    from detection.engine.inference import inference_on_dataset
    from detection.engine.launch import (check_class_names, find_inference_weights, load_config_from_args,
                                         load_inference_model, setup_run)
    from detection.engine.tasks import get_task
    from detection.evaluation.evaluator import json_safe

    cfg = load_config_from_args(args)
    if args.analyze:
        from analyze_results import check_analysis_arguments

        check_analysis_arguments(args)
    task = get_task(cfg)
    weights = find_inference_weights(cfg, args.weights, task)
    output_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "inference")
    device = setup_run(cfg, output_dir, distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    model, names = load_inference_model(task, cfg, weights, device)
    if args.fast:
        from detection.export.fast import optimize_for_inference

        model = optimize_for_inference(model, device)
    loader, dataset = task.build_test_data(cfg)
    if weights:  # the test set's own class list (e.g. a COCO JSON's categories) must be the model's too
        check_class_names(names, task.class_names(cfg, dataset), weights, f"the class list of {cfg.DATA.TEST_SET}")
    main = is_main_process()
    evaluator = task.build_evaluator(cfg, dataset, output_dir if main else None)
    views = (f", test scales {list(cfg.TEST.SCALES)}{' + flip' if cfg.TEST.FLIP else ''}"
             if cfg.MODEL.META_ARCHITECTURE == "faster_rcnn" else "")
    logger.info("evaluating %s on %s (%d images)%s", weights or "the pretrained model", cfg.DATA.TEST_SET,
                len(dataset), views)
    with torch.inference_mode() if args.fast else contextlib.nullcontext():
        metrics, predictions = inference_on_dataset(task, cfg, model, loader, dataset, evaluator, device,
                                                    progress=not args.no_progress)
    if not main:
        return 0
    per_image = []
    for index, output in predictions:
        record = dataset.records[index]
        per_image.append({"image_id": record["image_id"], "file": record["path"],
                          **task.to_json(output, names, score_thresh=0.0)})
    write_json(os.path.join(output_dir, "predictions.json"), json_safe(per_image))
    run = {"weights": weights, "test_set": cfg.DATA.TEST_SET, "images": len(predictions), "class_names": list(names)}
    if cfg.MODEL.META_ARCHITECTURE == "faster_rcnn":
        run.update(test_scales=list(cfg.TEST.SCALES), flip=bool(cfg.TEST.FLIP))
    elif "TEN_CROP" in cfg.TEST:
        run.update(ten_crop=bool(cfg.TEST.TEN_CROP))
    write_json(os.path.join(output_dir, "metrics.json"), json_safe({**run, **metrics}))
    atomic_write_text(os.path.join(output_dir, "config.yaml"), dump_config(cfg))
    print(f"{cfg.DATA.TEST_SET}: {_headline(metrics)}\nresults: {os.path.abspath(output_dir)}")
    if args.analyze and cfg.MODEL.META_ARCHITECTURE == "faster_rcnn":
        from analyze_results import run_analysis

        run_analysis(cfg, dataset.records, names, json_safe(per_image), os.path.join(output_dir, "analysis"), args,
                     source="test_net predictions")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.engine.launch import run_tool

    return run_tool(test, args)


if __name__ == "__main__":
    sys.exit(main())
