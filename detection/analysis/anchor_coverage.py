"""How well a detector's anchors reach the ground truth, and anchors that reach it better.

Coverage: for every ground-truth box in the model's frame (boxes.collect_boxes), the IoU of its best anchor
under the RPN's training rule: the anchors of every level of the model's generators, on the image's own grid,
without those the RPN ignores for crossing the border by more than TRAIN.RPN_ALLOWED_BORDER. The best anchor of
one shape is the grid position nearest to the box centre along each axis (IoU falls with the centre offset along
either axis, separately), clipped to the positions the border rule allows, so the search is exact and costs
O(boxes x anchors per cell) instead of O(boxes x all anchors); tests check it against the brute-force IoU with
every anchor the model generates.

Suggestion, in the generator's form (the RPN head keeps its number of anchors per cell):
- C4: ANCHOR_SCALES (x FEAT_STRIDE px) x ANCHOR_RATIOS;
- FPN: one MODEL.FPN.ANCHOR_SIZES entry per level (ascending, finest level first) x ANCHOR_RATIOS.
It starts from k-means of the box shapes with the IoU distance (YOLOv2's, as YOLOv5's autoanchor), grouped into
that form, then mutates sizes and ratios (log scale, seeded) and keeps what raises the fitness: the fraction of
boxes reaching TRAIN.RPN_POSITIVE_OVERLAP, then the fraction reaching 0.5, then the mean best IoU.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from detection.analysis.boxes import AREA_BANDS, BoxSet, area_band

__all__ = ["best_anchor_iou", "coverage_summary", "AnchorParams", "current_anchor_params", "cell_anchors_for",
           "kmeans_iou", "suggest_anchors", "Suggestion", "coverage_table"]


def _axis_best(centre: np.ndarray, lo_edge: np.ndarray, hi_edge: np.ndarray, stride: np.ndarray,
               cells: np.ndarray, limit: np.ndarray, border: float):
    """Per box and anchor: the best grid offset along one axis. centre [N, 1]; lo_edge, hi_edge [1, K] (the
    cell-(0, 0) anchor's edges); stride, cells, limit (image side) [N, 1]. Returns (lo, hi) edges [N, K] of the
    chosen anchors and valid [N, K] (some position is allowed)."""
    j = np.rint((centre - 0.5 * (lo_edge + hi_edge)) / stride)
    first = np.zeros_like(j)
    last = np.broadcast_to(cells - 1, j.shape).astype(np.float64)
    if border >= 0:
        first = np.maximum(first, np.ceil((-border - lo_edge) / stride))
        last = np.minimum(last, np.floor((limit + border - hi_edge) / stride))
    valid = first <= last
    j = np.clip(j, first, np.maximum(first, last))
    return lo_edge + stride * j, hi_edge + stride * j, valid


def best_anchor_iou(boxes: BoxSet, view, cell_anchors: Optional[Sequence] = None, chunk: int = 65536) -> np.ndarray:
    """float64 [N]: the best IoU of every box of `boxes` with the anchors of `view` (a ModelView), or of the given
    `cell_anchors` (per level [A, 4] xyxy of the cell at (0, 0)) on view's levels; 0 when the border rule allows
    no anchor of any shape."""
    cells = [np.asarray(getattr(a, "numpy", lambda: a)(), np.float64) for a in (cell_anchors or view.cell_anchors)]
    best = np.zeros(len(boxes), np.float64)
    for start in range(0, len(boxes), chunk):
        part = boxes.subset(slice(start, start + chunk))
        b = part.boxes
        cx, cy = (0.5 * (b[:, 0] + b[:, 2]))[:, None], (0.5 * (b[:, 1] + b[:, 3]))[:, None]
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, None]
        out = np.zeros(len(part), np.float64)
        for level, a in enumerate(cells):
            padded = part.padded_hw.astype(np.float64)
            s = float(view.strides[level])
            fh, fw = np.ceil(padded[:, 0:1] / s), np.ceil(padded[:, 1:2] / s)
            if view.torchvision_placement[level]:
                sy, sx = np.floor(padded[:, 0:1] / fh), np.floor(padded[:, 1:2] / fw)
            else:
                sy = sx = np.full_like(fh, s)
            x1, x2, vx = _axis_best(cx, a[None, :, 0], a[None, :, 2], sx, fw, part.image_hw[:, 1:2],
                                    view.allowed_border)
            y1, y2, vy = _axis_best(cy, a[None, :, 1], a[None, :, 3], sy, fh, part.image_hw[:, 0:1],
                                    view.allowed_border)
            iw = np.clip(np.minimum(x2, b[:, 2:3]) - np.maximum(x1, b[:, 0:1]), 0, None)
            ih = np.clip(np.minimum(y2, b[:, 3:4]) - np.maximum(y1, b[:, 1:2]), 0, None)
            inter = iw * ih
            iou = inter / (area + (x2 - x1) * (y2 - y1) - inter)
            iou[~(vx & vy)] = 0.0
            out = np.maximum(out, iou.max(axis=1))
        best[start:start + len(part)] = out
    return best


def coverage_summary(best_iou: np.ndarray, boxes: BoxSet, positive: float, bins: int = 20) -> dict:
    """Fractions of boxes whose best anchor reaches `positive` and 0.5, overall and per area band, the mean best
    IoU and a histogram of it (`bins` equal bins over [0, 1])."""
    best_iou = np.asarray(best_iou, np.float64)
    bands = area_band(boxes.area)

    def fractions(mask):
        n = int(mask.sum())
        return {"boxes": n, "at_positive": float((best_iou[mask] >= positive).mean()) if n else None,
                "at_0.5": float((best_iou[mask] >= 0.5).mean()) if n else None,
                "mean_best_iou": float(best_iou[mask].mean()) if n else None}

    counts, edges = np.histogram(best_iou, bins=bins, range=(0.0, 1.0))
    return {"positive_overlap": float(positive), **fractions(np.ones(len(best_iou), bool)),
            "bands": {name: fractions(bands == k) for k, (name, _, _) in enumerate(AREA_BANDS)},
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}


@dataclasses.dataclass
class AnchorParams:
    """Anchors in the generator's form. form 'c4': sizes = ANCHOR_SCALES (units of FEAT_STRIDE); 'fpn': sizes =
    MODEL.FPN.ANCHOR_SIZES (px, one per level). ratios: ANCHOR_RATIOS (h / w)."""

    form: str
    sizes: List[float]
    ratios: List[float]

    def overrides(self) -> List[str]:
        """[KEY, VALUE, ...] for --set / merge_from_list."""
        key = "ANCHOR_SCALES" if self.form == "c4" else "MODEL.FPN.ANCHOR_SIZES"
        return [key, _fmt(self.sizes), "ANCHOR_RATIOS", _fmt(self.ratios)]

    def set_line(self) -> str:
        k1, v1, k2, v2 = self.overrides()
        return f"--set {k1} '{v1}' {k2} '{v2}'"


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def current_anchor_params(cfg) -> AnchorParams:
    """The config's anchors in their form."""
    if cfg.MODEL.NECK == "fpn":
        return AnchorParams("fpn", [float(s) for s in cfg.MODEL.FPN.ANCHOR_SIZES], [float(r) for r in cfg.ANCHOR_RATIOS])
    return AnchorParams("c4", [float(s) for s in cfg.ANCHOR_SCALES], [float(r) for r in cfg.ANCHOR_RATIOS])


def cell_anchors_for(params: AnchorParams, strides: Sequence[int], placement: str) -> List[np.ndarray]:
    """Per level the float64 [A, 4] cell anchors that build_faster_rcnn's generator would have for `params`
    (modeling.anchors.build_anchor_generator: C4 as one level of sides scale x stride, FPN one size per level)."""
    from detection.modeling.anchors import build_anchor_generator

    if params.form == "c4":
        sizes = [[s * strides[0] for s in params.sizes]]
    else:
        sizes = [(s,) for s in params.sizes]
    gen = build_anchor_generator(placement, list(strides), sizes, params.ratios)
    return [g.base_anchors.double().numpy() for g in gen.generators]


def kmeans_iou(wh: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """k shapes [k, 2] (w, h) clustering `wh` [N, 2] with the distance 1 - IoU of boxes sharing a centre
    (YOLOv2's anchor clustering); initialised at quantiles of the box area; sorted by area."""
    wh = np.asarray(wh, np.float64)
    k = max(1, min(int(k), len(wh)))
    order = np.argsort(wh.prod(1), kind="stable")
    centres = wh[order[np.linspace(0, len(wh) - 1, k).round().astype(int)]].copy()
    assign = None
    for _ in range(iterations):
        inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
        iou = inter / (wh.prod(1)[:, None] + centres.prod(1)[None] - inter)
        new = iou.argmax(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)
    return centres[np.argsort(centres.prod(1), kind="stable")]


@dataclasses.dataclass
class Suggestion:
    """current and suggested AnchorParams with their fitness on the search sample (see the module docstring)."""

    current: AnchorParams
    suggested: AnchorParams
    fitness_current: float
    fitness_suggested: float


def _fitness(best: np.ndarray, positive: float) -> float:
    return float((best >= positive).mean() + 1e-2 * (best >= 0.5).mean() + 1e-4 * best.mean())


def _grouped_means(values: np.ndarray, groups: int) -> np.ndarray:
    """Sorted values split into `groups` consecutive runs, each averaged."""
    values = np.sort(values)
    return np.array([part.mean() for part in np.array_split(values, groups)])


def suggest_anchors(boxes: BoxSet, view, current: AnchorParams, placement: str, iterations: int = 400,
                    sample: int = 10000, seed: int = 0, progress: bool = True) -> Suggestion:
    """Anchors in `current`'s form that reach more of `boxes` (module docstring); deterministic for a seed."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    if len(boxes) > sample:
        boxes = boxes.subset(np.sort(rng.choice(len(boxes), sample, replace=False)))
    positive = view.positive_overlap
    n_sizes, n_ratios = len(current.sizes), len(current.ratios)
    unit = float(view.strides[0]) if current.form == "c4" else 1.0

    def evaluate(log_sizes, log_ratios):
        sizes = np.sort(np.exp(log_sizes))
        params = AnchorParams(current.form, [float(s) for s in sizes / unit], [float(r) for r in np.exp(log_ratios)])
        return _fitness(best_anchor_iou(boxes, view, cell_anchors_for(params, view.strides, placement)), positive)

    shapes = kmeans_iou(boxes.wh, n_sizes * n_ratios)
    log_sizes = np.log(_grouped_means(np.sqrt(shapes.prod(1)), n_sizes))
    log_ratios = np.log(_grouped_means(shapes[:, 1] / shapes[:, 0], n_ratios))
    start = np.log(np.asarray(current.sizes) * unit), np.log(np.asarray(current.ratios))
    fit_current = evaluate(*start)
    best_params, best_fit = max([(start, fit_current), ((log_sizes, log_ratios), evaluate(log_sizes, log_ratios))],
                                key=lambda t: t[1])
    for _ in tqdm(range(iterations), desc="anchor search", unit="step", disable=not progress, leave=False):
        cand = []
        for p in best_params:
            mask = rng.random(p.shape) < 0.7
            cand.append(p + mask * rng.normal(0.0, 0.15, p.shape))
        fit = evaluate(*cand)
        if fit > best_fit:
            best_params, best_fit = tuple(cand), fit
    sizes = np.sort(np.exp(best_params[0])) / unit
    ratios = np.sort(np.exp(best_params[1]))
    rounded = AnchorParams(current.form, _round_sizes(sizes, current.form), [round(float(r), 2) for r in ratios])
    return Suggestion(current, rounded, fit_current,
                      _fitness(best_anchor_iou(boxes, view, cell_anchors_for(rounded, view.strides, placement)),
                               positive))


def _round_sizes(sizes: np.ndarray, form: str) -> List[float]:
    """FPN sizes to whole pixels (MODEL.FPN.ANCHOR_SIZES holds ints), C4 scales to 2 decimals; kept distinct."""
    if form == "fpn":
        out = np.maximum(np.round(sizes), 1).astype(int)
        for i in range(1, len(out)):
            out[i] = max(out[i], out[i - 1] + 1)
        return [int(s) for s in out]
    return [float(round(float(s), 2)) for s in sizes]


def band_names() -> List[str]:
    return [name for name, _, _ in AREA_BANDS]


def coverage_table(rows: Dict[str, dict]) -> str:
    """A text table of coverage summaries by name: boxes, >= positive, >= 0.5, and >= positive per band."""
    names = band_names()
    first = next(iter(rows.values()))
    pos = first["positive_overlap"]
    header = ["anchors", "boxes", f"IoU>={pos:g}", "IoU>=0.5"] + [f"{n} >={pos:g}" for n in names]
    lines = [header]
    for name, s in rows.items():
        cells = [name, str(s["boxes"]), _pct(s["at_positive"]), _pct(s["at_0.5"])]
        cells += [_pct(s["bands"][n]["at_positive"]) + f" ({s['bands'][n]['boxes']})" for n in names]
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines)


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"
