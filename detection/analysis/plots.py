"""Charts of the analysis as PNG bytes (matplotlib's Agg backend, imported on use; no window is ever opened)."""
from __future__ import annotations

import io
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["bar_chart", "histogram", "heatmap", "overlaid_histograms", "png_bytes"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bar_chart(values: Dict[str, Optional[float]], title: str, ylabel: str, color: str = "#3b75af",
              fmt: str = "{:.2f}", size=(5.0, 3.0)) -> bytes:
    """Vertical bars with their values written on top (None shown as 'n/a')."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    names = list(values)
    heights = [v if v is not None else 0.0 for v in values.values()]
    bars = ax.bar(names, heights, color=color)
    for bar, v in zip(bars, values.values()):
        ax.annotate("n/a" if v is None else fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    ax.tick_params(axis="x", labelsize=8)
    return png_bytes(fig)


def histogram(counts: Sequence[int], edges: Sequence[float], title: str, xlabel: str, log_x: bool = False,
              marks: Sequence[float] = (), size=(5.0, 3.0)) -> bytes:
    """Bars of precomputed `counts` between `edges` (len(counts) + 1); vertical dashed lines at `marks`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    edges = np.asarray(edges, np.float64)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b75af", edgecolor="white")
    for m in marks:
        ax.axvline(m, color="#c0392b", linestyle="--", linewidth=1)
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("boxes")
    return png_bytes(fig)


def heatmap(matrix: np.ndarray, row_names: Sequence[str], col_names: Sequence[str], title: str,
            xlabel: str, ylabel: str) -> bytes:
    """A count matrix, each row's shade normalised by its sum, the counts written in the cells."""
    plt = _pyplot()
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n_cols, 0.8 + 0.5 * n_rows))
    sums = matrix.sum(1, keepdims=True)
    shade = np.divide(matrix, sums, out=np.zeros(matrix.shape, np.float64), where=sums > 0)
    ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    for i in range(n_rows):
        for j in range(n_cols):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if shade[i, j] > 0.6 else "black")
    ax.set_xticks(range(n_cols), [str(n) for n in col_names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [str(n) for n in row_names], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return png_bytes(fig)


def overlaid_histograms(series: Dict[str, Sequence[int]], edges: Sequence[float], title: str, xlabel: str,
                        marks: Sequence[float] = (), size=(5.5, 3.2)) -> bytes:
    """Several precomputed histograms over the same `edges`, as outlined steps; dashed lines at `marks`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    edges = np.asarray(edges, np.float64)
    for (name, counts), color in zip(series.items(), ("#7f8c8d", "#27ae60", "#3b75af", "#c0392b")):
        ax.stairs(counts, edges, label=name, color=color, linewidth=2, fill=False)
    for m in marks:
        ax.axvline(m, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("boxes")
    ax.legend(fontsize=8)
    return png_bytes(fig)
