"""Error analysis of a detector's predictions on a test set: TIDE's breakdown, a confusion matrix, AP per area
band and the worst images, written as files and gathered into one self-contained HTML report.

    summary = analyze_predictions(records, predictions, class_names, out_dir)

records: the test set's reader records (ground truth: boxes, labels, difficult, iscrowd). predictions: entries of
tools/test_net.py's predictions.json: ``{image_id, file, detections: [{box_xyxy, label, score}]}``. Writes into
out_dir: analysis.json, report.html, tide_errors.png, confusion_matrix.png / .csv, ap_per_size.png,
worst_false_positives.jpg, largest_missed.jpg.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import numpy as np

from detection.analysis.confusion import confusion_csv, confusion_matrix
from detection.analysis.size_ap import ap_per_size
from detection.analysis.tide import MAIN_ERRORS, ImageDetections, tide_errors
from detection.analysis.worst import error_sheet, worst_errors

__all__ = ["match_predictions", "analyze_predictions", "format_summary", "REPORT_FILE"]

REPORT_FILE = "report.html"
_TIDE_NAMES = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "missed": "Miss"}


def match_predictions(records: Sequence[dict], predictions: Sequence[dict], source: str = "predictions"
                      ) -> List[ImageDetections]:
    """One ImageDetections per record (ground truth: difficult and crowd boxes are ignore regions), with the
    detections of the prediction entry of the same image_id (none when the image has no entry)."""
    from detection.evaluation.evaluator import EvaluationInputError

    index = {str(r["image_id"]): i for i, r in enumerate(records)}
    dets: Dict[int, list] = {}
    for k, entry in enumerate(predictions):
        key = str(entry.get("image_id"))
        if key not in index:
            raise EvaluationInputError(f"{source}: entry {k} is for image {entry.get('image_id')!r} "
                                       f"({entry.get('file', '?')}), which is not in the test set")
        dets[index[key]] = entry.get("detections", [])
    out = []
    for i, rec in enumerate(records):
        d = dets.get(i, [])
        boxes = np.asarray([e["box_xyxy"] for e in d], np.float64).reshape(-1, 4)
        out.append(ImageDetections(
            gt_boxes=np.asarray(rec["boxes"], np.float64), gt_labels=np.asarray(rec["labels"], np.int64),
            gt_ignore=np.asarray(rec["difficult"], bool) | np.asarray(rec["iscrowd"], bool), boxes=boxes,
            scores=np.asarray([e["score"] for e in d], np.float64), labels=np.asarray([e["label"] for e in d], np.int64)))
    return out


def analyze_predictions(records: Sequence[dict], predictions: Sequence[dict], class_names: Sequence[str],
                        out_dir: str, score_thresh: float = 0.5, iou_thresh: float = 0.5, num_worst: int = 12,
                        title: str = "Detection error analysis", source: str = "predictions",
                        progress: bool = True) -> dict:
    """Everything in the module docstring; returns the summary written to analysis.json. progress: a bar over
    the images while matching (shown on a terminal only)."""
    import sys

    from detection.analysis import plots
    from detection.analysis.report import html_page, image_tag, table
    from detection.data.image_io import read_image_rgb
    from detection.utils.visualize import save_image

    os.makedirs(out_dir, exist_ok=True)
    images = match_predictions(records, predictions, source)
    k = len(class_names)
    tide = tide_errors(images, pos_thresh=iou_thresh, bg_thresh=0.1, progress=progress and sys.stderr.isatty())
    matrix = confusion_matrix(images, k, score_thresh, iou_thresh)
    sizes = ap_per_size(images, k, iou_thresh)
    fps, missed = worst_errors(tide.errors, num_worst)
    for e in fps + missed:
        e["file"] = records[e["image"]]["path"]
        e["image_id"] = records[e["image"]]["image_id"]

    names = list(class_names) + ["background"]
    files = {}

    def write(name: str, data: bytes) -> bytes:
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        files[name] = name
        return data

    tide_png = write("tide_errors.png", plots.bar_chart(
        {_TIDE_NAMES[n]: tide.main[n] for n in MAIN_ERRORS}, f"TIDE main errors (mAP@{iou_thresh:g} = {tide.ap:.1f})",
        "dAP (mAP points if fixed)", color="#c0392b"))
    conf_png = write("confusion_matrix.png", plots.heatmap(
        matrix, names, names, f"Confusion matrix (score >= {score_thresh:g}, IoU >= {iou_thresh:g})",
        "predicted", "ground truth"))
    csv_text = confusion_csv(matrix, class_names, score_thresh, iou_thresh)
    write("confusion_matrix.csv", csv_text.encode())
    size_png = write("ap_per_size.png", plots.bar_chart(
        sizes, f"AP@{iou_thresh:g} per COCO area band", "AP", fmt="{:.3f}"))
    sheets = {}
    for name, entries, heading in (("worst_false_positives.jpg", fps, "most confident false positives"),
                                   ("largest_missed.jpg", missed, "largest missed boxes")):
        sheet = error_sheet(entries, read_image_rgb, class_names, heading)
        if sheet is not None:
            save_image(os.path.join(out_dir, name), sheet, jpeg_quality=90)
            files[name] = name
            with open(os.path.join(out_dir, name), "rb") as f:
                sheets[name] = f.read()

    summary = {
        "images": len(records), "score_thresh": score_thresh, "iou_thresh": iou_thresh,
        "tide": {"map": tide.ap, "pos_thresh": tide.pos_thresh, "bg_thresh": tide.bg_thresh,
                 "main_dap": tide.main, "special_dap": tide.special, "counts": tide.counts,
                 "per_class_ap": {class_names[c - 1] if 0 < c <= k else str(c): v
                                  for c, v in tide.per_class_ap.items()}},
        "confusion_matrix": {"names": names, "rows": "ground truth", "columns": "prediction",
                             "matrix": matrix.tolist()},
        "ap_per_size": sizes,
        "worst_false_positives": [_brief(e, class_names) for e in fps],
        "largest_missed": [_brief(e, class_names) for e in missed],
        "files": sorted(files) + [REPORT_FILE],
    }
    with open(os.path.join(out_dir, "analysis.json"), "w") as f:
        json.dump(summary, f, indent=1)

    tide_rows = [[_TIDE_NAMES[n], f"{tide.main[n]:.2f}", tide.counts[n]] for n in MAIN_ERRORS]
    sections = [
        ("Summary", table([["images", len(records)], [f"mAP@{iou_thresh:g} (TIDE, 101-point)", f"{tide.ap:.2f}"]]
                          + [[f"AP@{iou_thresh:g} {b} (pycocotools)", "n/a" if v is None else f"{v:.3f}"]
                             for b, v in sizes.items()])),
        ("TIDE error breakdown", image_tag(tide_png, "TIDE errors") + table(tide_rows, ["error", "dAP", "count"])
         + table([["false positives (all scored 0)", f"{tide.special['false_pos']:.2f}"],
                  ["false negatives (all found)", f"{tide.special['false_neg']:.2f}"]], ["special error", "dAP"])
         + f'<p class="note">dAP: mAP points (of 100) gained if every error of the type were fixed, as TIDE (Bolya et '
           f'al., ECCV 2020) defines them at IoU {iou_thresh:g} and background IoU {tide.bg_thresh:g}: Cls wrong class, '
           'Loc poor box, Both wrong class and poor box, Dupe duplicate, Bkg background, Miss missed.</p>'),
        ("Confusion matrix", image_tag(conf_png, "confusion matrix")
         + table([[names[i]] + [int(v) for v in row] for i, row in enumerate(matrix)], ["ground truth \\ predicted"]
                 + names)
         + f'<p class="note">Detections scoring at least {score_thresh:g} matched one to one with ground-truth boxes '
           f'of any class at IoU >= {iou_thresh:g}; last column: missed boxes, last row: detections on no box.</p>'),
        ("AP per size band", image_tag(size_png, "AP per size band")
         + '<p class="note">COCO bands in original-image pixels: small &lt; 32², medium &lt; 96², large.</p>'),
    ]
    for name, heading in (("worst_false_positives.jpg", "Most confident false positives"),
                          ("largest_missed.jpg", "Largest missed objects")):
        if name in sheets:
            sections.append((heading, image_tag(sheets[name], heading, "image/jpeg")))
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        f.write(html_page(title, sections, intro=f"{len(records)} test images, {k} classes"))
    return summary


def _brief(e: dict, class_names) -> dict:
    out = {k: e[k] for k in ("type", "image_id", "file", "score", "box", "gt_box") if k in e}
    for key in ("label", "gt_label"):
        if key in e:
            out[key.replace("label", "class")] = class_names[e[key] - 1] if 0 < e[key] <= len(class_names) else str(e[key])
    return out


def format_summary(summary: dict) -> str:
    """A few printed lines: mAP, TIDE's dAPs, AP per size band."""
    t = summary["tide"]
    lines = [f"mAP@{summary['iou_thresh']:g} (TIDE): {t['map']:.2f}",
             "TIDE dAP:  " + "  ".join(f"{_TIDE_NAMES[n]} {t['main_dap'][n]:.2f}" for n in MAIN_ERRORS)
             + f"  | FalsePos {t['special_dap']['false_pos']:.2f}  FalseNeg {t['special_dap']['false_neg']:.2f}",
             "AP per size: " + "  ".join(f"{b} {'n/a' if v is None else f'{v:.3f}'}"
                                         for b, v in summary["ap_per_size"].items())]
    return "\n".join(lines)
