"""Precision-recall curves as PNG files (matplotlib's Agg canvas, imported when called; no pyplot global state)."""
from __future__ import annotations

import math
import os
import re
from typing import Mapping

import numpy as np


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "class"


def plot_pr_curves(precision: Mapping[str, np.ndarray], recall: Mapping[str, np.ndarray],
                   ap: Mapping[str, float], out_dir: str, prefix: str = "pr_", dpi: int = 100) -> list[str]:
    """Save one precision-recall curve per class as <out_dir>/<prefix><class>.png and return the paths.

    precision[c], recall[c]: [D_c] cumulative over the class's score-sorted detections (`voc_evaluate`'s output);
    ap[c]: the class's AP as a fraction (NaN: no ground truth). The title gives the AP in percent; the dashed line
    is the interpolated (monotone) precision envelope the area AP integrates.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in precision:
        prec = np.asarray(precision[name], dtype=np.float64)
        rec = np.asarray(recall[name], dtype=np.float64)
        value = ap.get(name, float("nan"))
        fig = Figure(figsize=(5, 4), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        if rec.size and np.all(np.isfinite(rec)):
            ax.plot(rec, prec, "-", color="tab:blue", label="precision")
            envelope = np.maximum.accumulate(prec[::-1])[::-1]
            ax.plot(rec, envelope, "--", color="tab:orange", linewidth=1, label="envelope")
            ax.legend(loc="lower left")
        else:
            ax.text(0.5, 0.5, "no detections" if not rec.size else "no ground truth", ha="center", va="center")
        ap_text = "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.2f}"
        ax.set_title(f"class: {name}, AP = {ap_text}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{prefix}{_safe_name(name)}.png")
        fig.savefig(path)
        paths.append(path)
    return paths
