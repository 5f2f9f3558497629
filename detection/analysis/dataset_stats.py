"""Statistics of a detection split as the model sees it, and what is wrong with it.

    stats = split_statistics(records, class_names, view, sizes="train")

Counts come from the records (boxes per class, boxes per image, images without boxes, difficult and crowd boxes);
sizes and shapes from the boxes in the resized frame (boxes.collect_boxes, difficult boxes included): COCO's area
bands, histograms of sqrt(area) and of the aspect ratio h / w. The readers' ReadStats.box_issues are the boxes that
crossed the image border (clipped) or had no area (dropped).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from detection.analysis.boxes import AREA_BANDS, area_band, collect_boxes

__all__ = ["split_statistics", "statistics_figure", "summary_table"]


def split_statistics(records: Sequence[dict], class_names: Sequence[str], view, sizes: str = "train",
                     box_issues: Sequence[dict] = ()) -> dict:
    """A JSON-friendly dict: images, boxes, per-class and per-image counts, area bands and histograms (resized
    frame), images without boxes, and the clipped / dropped boxes."""
    k = len(class_names)
    labels = np.concatenate([np.asarray(r["labels"], np.int64) for r in records]) if records else np.zeros(0, int)
    difficult = np.concatenate([np.asarray(r["difficult"], bool) for r in records]) if records else np.zeros(0, bool)
    crowd = np.concatenate([np.asarray(r["iscrowd"], bool) for r in records]) if records else np.zeros(0, bool)
    per_image = np.array([len(r["labels"]) for r in records], np.int64)
    boxes = collect_boxes(records, view, sizes=sizes, use_difficult=True)
    area = boxes.area
    wh = boxes.wh
    side = np.sqrt(area)
    side_edges = np.geomspace(max(1.0, float(side.min()) if len(side) else 1.0) * 0.999,
                              max(2.0, float(side.max()) if len(side) else 2.0) * 1.001, 25)
    ratio_edges = np.linspace(-3, 3, 25)  # log2(h / w)
    log_ratio = np.log2(wh[:, 1] / np.maximum(wh[:, 0], 1e-9)) if len(wh) else np.zeros(0)
    bands = area_band(area)
    empty = [r for r, n in zip(records, per_image) if n == 0]
    return {
        "images": len(records), "boxes": int(len(labels)),
        "frame": {"sizes": sizes, "scales": list(view.train_min_sizes if sizes == "train" else [view.test_min_size]),
                  "max_size": view.train_max_size if sizes == "train" else view.test_max_size,
                  "resize_rule": view.resize_rule, "rows_per_box": len(view.train_min_sizes) if sizes == "train" else 1},
        "boxes_per_class": {str(n): int((labels == c + 1).sum()) for c, n in enumerate(class_names)},
        "difficult_per_class": {str(n): int(((labels == c + 1) & difficult).sum()) for c, n in enumerate(class_names)},
        "crowd_boxes": int(crowd.sum()),
        "boxes_per_image": {"mean": float(per_image.mean()) if len(per_image) else 0.0,
                            "max": int(per_image.max()) if len(per_image) else 0,
                            "counts": np.bincount(per_image, minlength=1).tolist()},
        "area_bands": {name: int((bands == b).sum()) for b, (name, _, _) in enumerate(AREA_BANDS)},
        "box_side_histogram": {"edges": side_edges.tolist(),
                               "counts": np.histogram(np.clip(side, side_edges[0], side_edges[-1]), side_edges)[0].tolist()},
        "aspect_ratio_histogram": {"log2_edges": ratio_edges.tolist(),
                                   "counts": np.histogram(np.clip(log_ratio, -3, 3), ratio_edges)[0].tolist()},
        "smallest_box_px": [float(v) for v in wh[np.argmin(area)]] if len(area) else None,
        "largest_box_px": [float(v) for v in wh[np.argmax(area)]] if len(area) else None,
        "images_without_boxes": [str(r["path"]) for r in empty],
        "clipped_boxes": [dict(b) for b in box_issues if b["kind"] == "outside"],
        "degenerate_boxes": [dict(b) for b in box_issues if b["kind"] == "degenerate"],
        "classes": k,
    }


def statistics_figure(stats: dict, title: str) -> bytes:
    """One PNG with four panels: boxes per class, boxes per image, box side (sqrt area, COCO bands marked) and
    aspect ratio, the last two in the resized frame."""
    from detection.analysis.plots import _pyplot, png_bytes

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    names = list(stats["boxes_per_class"])
    ax = axes[0, 0]
    ax.bar(names, list(stats["boxes_per_class"].values()), color="#3b75af")
    ax.set_title("boxes per class", fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=30 if len(names) > 6 else 0)
    ax = axes[0, 1]
    counts = stats["boxes_per_image"]["counts"]
    ax.bar(range(len(counts)), counts, color="#3b75af")
    ax.set_title(f"boxes per image (mean {stats['boxes_per_image']['mean']:.1f})", fontsize=10)
    ax.set_xlabel("boxes")
    ax.set_ylabel("images")
    ax = axes[1, 0]
    edges = np.asarray(stats["box_side_histogram"]["edges"])
    ax.bar(edges[:-1], stats["box_side_histogram"]["counts"], width=np.diff(edges), align="edge", color="#3b75af",
           edgecolor="white")
    ax.set_xscale("log")
    for m in (32, 96):
        ax.axvline(m, color="#c0392b", linestyle="--", linewidth=1)
    bands = stats["area_bands"]
    ax.set_title(f"box side sqrt(area), resized px (small {bands['small']}, medium {bands['medium']}, large "
                 f"{bands['large']})", fontsize=9)
    ax.set_ylabel("boxes")
    ax = axes[1, 1]
    edges = np.asarray(stats["aspect_ratio_histogram"]["log2_edges"])
    ax.bar(edges[:-1], stats["aspect_ratio_histogram"]["counts"], width=np.diff(edges), align="edge",
           color="#3b75af", edgecolor="white")
    ticks = [-3, -2, -1, 0, 1, 2, 3]
    ax.set_xticks(ticks, ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set_title("aspect ratio h / w", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


def summary_table(per_split: dict, stats: dict, split: str) -> str:
    """The printed summary: images per split, then the chosen split's boxes, classes, bands and problems."""
    lines = ["images per split: " + ", ".join(f"{k} {v}" for k, v in per_split.items())]
    width = max([len(n) for n in stats["boxes_per_class"]] + [12])
    lines.append(f"{split}: {stats['images']} images, {stats['boxes']} boxes "
                 f"({stats['boxes_per_image']['mean']:.2f} per image, at most {stats['boxes_per_image']['max']})")
    lines.append(f"  {'class'.ljust(width)}  boxes  difficult")
    for name, n in stats["boxes_per_class"].items():
        lines.append(f"  {name.ljust(width)}  {n:5d}  {stats['difficult_per_class'][name]:9d}")
    b = stats["area_bands"]
    lines.append(f"  area bands (resized frame): small {b['small']}, medium {b['medium']}, large {b['large']}")
    lines.append(f"  images without boxes: {len(stats['images_without_boxes'])}; boxes clipped at the border: "
                 f"{len(stats['clipped_boxes'])}; degenerate boxes dropped: {len(stats['degenerate_boxes'])}")
    return "\n".join(lines)
