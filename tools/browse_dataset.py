#!/usr/bin/env python
"""Look at a detection dataset the way the model sees it: ground truth drawn, statistics, problems, anchor coverage.

  python tools/browse_dataset.py --cfg FILE [--split train|test] [--augment] [--num N] [--output DIR] [--anchors]

Reads the config's DATA.TRAIN_SETS (--split train, the default) or DATA.TEST_SET with the same readers and checks as
training (errors name the file and line). Writes into --output (default OUTPUT_DIR/browse_<split>):
- images/*.jpg and contact_sheet.jpg: N images (spread over the split) with their boxes and class names; with
  --augment as the model receives them in training: after the training transforms (flip, crop, jitter) and the
  model's own resize and padding (detection/ops/resize.py via the model's preprocessor);
- statistics.png and statistics.json: images per split, boxes per class and per image, COCO area bands and
  histograms of box size and aspect ratio in the resized frame the model sees, images without boxes, boxes
  clipped at the border or dropped as degenerate;
- with --anchors: anchor_coverage.png and anchors.json: for the model's anchors (C4 or FPN, after its resize, the
  RPN's border rule included) the fraction of boxes whose best anchor reaches TRAIN.RPN_POSITIVE_OVERLAP and 0.5,
  overall and per size band, a histogram of the best-anchor IoU, and suggested anchors in the generator's form
  with the coverage they reach, printed as a ready --set line.
A summary table is printed. Exit codes: 0 done, 2 bad arguments / config / data.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
logger = logging.getLogger("detection.browse_dataset")


def _parser() -> argparse.ArgumentParser:
    from detection.engine.launch import add_config_arguments

    p = argparse.ArgumentParser(prog="browse_dataset.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--split", choices=("train", "test"), default="train", help="DATA.TRAIN_SETS or DATA.TEST_SET")
    p.add_argument("--augment", action="store_true",
                   help="draw the training input as the model receives it (transforms + the model's resize)")
    p.add_argument("--num", type=int, default=16, metavar="N", help="images to draw (default 16; 0: none)")
    p.add_argument("--output", default=None, metavar="DIR", help="default OUTPUT_DIR/browse_<split>")
    p.add_argument("--anchors", action="store_true", help="anchor coverage and suggested anchors")
    p.add_argument("--search-steps", type=int, default=400, metavar="K",
                   help="mutation steps of the anchor search (default 400)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _read_split(cfg, split: str):
    """DetectionRecords of a split; the training split with DATA.FILTER_EMPTY off, so that its images without boxes
    are listed (training leaves them out when the key is on)."""
    from detection.data.build import build_detection_records

    if split == "train":
        cfg = copy.deepcopy(cfg)
        cfg.DATA.FILTER_EMPTY = False
    return build_detection_records(cfg, is_train=split == "train")


def _images_per_split(cfg, split, records) -> dict:
    from detection.data.records import DatasetError

    counts = {split: len(records)}
    other = "test" if split == "train" else "train"
    try:
        counts[other] = len(_read_split(cfg, other))
    except (DatasetError, FileNotFoundError) as exc:
        counts[other] = f"unreadable ({exc})"
    return dict(sorted(counts.items(), key=lambda kv: kv[0] != "train"))


def browse(args) -> int:
    from tqdm import tqdm

    from detection.analysis.browse import model_input_picture, pick_indices, stored_picture
    from detection.analysis.dataset_stats import split_statistics, statistics_figure, summary_table
    from detection.analysis.model_view import build_model_view
    from detection.engine.launch import ToolError, check_writable_dir, load_config_from_args
    from detection.evaluation.evaluator import json_safe
    from detection.utils.visualize import make_contact_sheet, save_image

    if args.num < 0:
        raise ToolError(f"--num {args.num}: expected N >= 0")
    cfg = load_config_from_args(args)
    if cfg.MODEL.META_ARCHITECTURE != "faster_rcnn":
        raise ToolError(f"{args.cfg}: browse_dataset is for detection datasets (MODEL.META_ARCHITECTURE faster_rcnn)")
    out = args.output or os.path.join(cfg.OUTPUT_DIR, f"browse_{args.split}")
    check_writable_dir(out)
    records = _read_split(cfg, args.split)
    names = list(records.class_names)
    view = build_model_view(cfg)
    progress = not args.no_progress and sys.stderr.isatty()

    stats = split_statistics(records.records, names, view, "train" if args.split == "train" else "test",
                             records.stats.box_issues)
    stats["images_per_split"] = _images_per_split(cfg, args.split, records)
    stats["filter_empty_in_training"] = bool(cfg.DATA.FILTER_EMPTY)
    with open(os.path.join(out, "statistics.png"), "wb") as f:
        f.write(statistics_figure(stats, f"{args.split}: {stats['images']} images, {stats['boxes']} boxes "
                                         f"({os.path.basename(args.cfg)})"))
    with open(os.path.join(out, "statistics.json"), "w") as f:
        json.dump(json_safe(stats), f, indent=1)

    if args.num:
        from detection.data.build import build_detection_dataset

        indices = pick_indices(len(records), args.num)
        dataset = build_detection_dataset(cfg, is_train=True, records=records) if args.augment else None
        pictures, captions = [], []
        for i in tqdm(indices, desc="drawing", unit="image", disable=not progress):
            if args.augment:
                picture, caption = model_input_picture(dataset, i, view, names, seed=int(cfg.RNG_SEED) + i)
            else:
                picture, caption = stored_picture(records[i], names)
            save_image(os.path.join(out, "images", f"{i:05d}.jpg"), picture)
            pictures.append(picture)
            captions.append(caption)
        what = "as the model receives them (training transforms + resize)" if args.augment else "ground truth"
        sheet = make_contact_sheet(pictures, captions, ncols=4, cell_size=(320, 240),
                                   title=f"{args.split}: {what}")
        save_image(os.path.join(out, "contact_sheet.jpg"), sheet)

    print(summary_table(stats["images_per_split"], stats, args.split))
    if stats["images_without_boxes"]:
        shown = ", ".join(os.path.basename(p) for p in stats["images_without_boxes"][:5])
        more = ", ..." if len(stats["images_without_boxes"]) > 5 else ""
        dropped = " (training leaves them out: DATA.FILTER_EMPTY)" if args.split == "train" and cfg.DATA.FILTER_EMPTY else ""
        print(f"  without boxes: {shown}{more}{dropped}")
    for key, what in (("clipped_boxes", "clipped"), ("degenerate_boxes", "dropped")):
        for issue in stats[key][:5]:
            print(f"  {what}: {issue['source']} box #{issue['index']} {[round(v, 1) for v in issue['box']]}"
                  + (f" ({issue['object']})" if issue.get("object") else ""))
    if args.anchors:
        _anchors(cfg, records, view, out, args, progress)
    print(f"outputs: {os.path.abspath(out)}")
    return 0


def _anchors(cfg, records, view, out, args, progress) -> None:
    """Coverage of the config's anchors, the suggestion and its coverage (computed with a model built from the
    config plus the suggested --set values)."""
    from detection.analysis import plots
    from detection.analysis.anchor_coverage import (best_anchor_iou, coverage_summary, coverage_table,
                                                    current_anchor_params, suggest_anchors)
    from detection.analysis.boxes import collect_boxes
    from detection.analysis.model_view import build_model_view
    from detection.config import merge_from_list
    from detection.engine.launch import ToolError

    if args.split != "train":
        logger.info("anchor coverage is computed on the training boxes at TRAIN.SCALES")
    use_difficult = bool(cfg.TRAIN.USE_DIFFICULT)
    boxes = collect_boxes(records.records, view, "train", use_difficult=use_difficult)
    if len(boxes) == 0:
        raise ToolError("no trainable box in the split: nothing to cover")
    current = current_anchor_params(cfg)
    cov_now = coverage_summary(best_anchor_iou(boxes, view), boxes, view.positive_overlap)
    suggestion = suggest_anchors(boxes, view, current, cfg.ANCHOR_PLACEMENT, iterations=args.search_steps,
                                 seed=max(int(cfg.RNG_SEED), 0), progress=progress)
    suggested_cfg = merge_from_list(copy.deepcopy(cfg), suggestion.suggested.overrides(), source="suggested anchors")
    suggested_view = build_model_view(suggested_cfg)  # the model training with the suggestion would build
    cov_new = coverage_summary(best_anchor_iou(boxes, suggested_view), boxes, view.positive_overlap)
    rows = {"current": cov_now, "suggested": cov_new}
    fig_data = plots.overlaid_histograms(
        {"current": cov_now["histogram"]["counts"], "suggested": cov_new["histogram"]["counts"]},
        cov_now["histogram"]["edges"],
        f"best-anchor IoU of {len(boxes)} training boxes", "IoU of the best anchor",
        marks=(view.positive_overlap, 0.5))
    with open(os.path.join(out, "anchor_coverage.png"), "wb") as f:
        f.write(fig_data)
    report = {"current": {"params": current.__dict__, "coverage": cov_now},
              "suggested": {"params": suggestion.suggested.__dict__, "coverage": cov_new,
                            "set": suggestion.suggested.set_line()},
              "boxes": len(boxes), "use_difficult": use_difficult, "placement": cfg.ANCHOR_PLACEMENT,
              "strides": view.strides, "allowed_border": view.allowed_border}
    with open(os.path.join(out, "anchors.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nanchor coverage (best anchor of each training box, {cfg.MODEL.NECK if cfg.MODEL.NECK == 'fpn' else 'C4'} "
          f"anchors after the model's resize, RPN border rule {view.allowed_border:g}):")
    print(coverage_table(rows))
    key = "ANCHOR_SCALES" if current.form == "c4" else "MODEL.FPN.ANCHOR_SIZES"
    print(f"current:   {key} {current.sizes} ANCHOR_RATIOS {current.ratios}")
    print(f"suggested: {suggestion.suggested.set_line()}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.engine.launch import run_tool
    from detection.utils.logger import setup_logger

    setup_logger(None)
    return run_tool(browse, args)


if __name__ == "__main__":
    sys.exit(main())
