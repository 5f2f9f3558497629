"""Compare an exported model's outputs with the PyTorch model's (tools/export_model.py --check, the tests).

    c = compare_detections(reference, exported)    # dicts of boxes [N, 4], scores [N], labels [N] (numpy or torch)
    c = compare_probabilities(reference_probs, exported_probs)
    c.ok, c.max_box_diff, c.max_score_diff, str(c)

Detections are paired in score order; where near-equal scores make the two orders differ, each exported
detection is paired with the unpaired reference detection of the same label closest in box and score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

__all__ = ["Comparison", "compare_detections", "compare_probabilities", "BOX_TOL", "SCORE_TOL"]

#: the issue's bounds: boxes within 0.01 px, scores (and probabilities) within 1e-4, on the CPU in float32
BOX_TOL, SCORE_TOL = 0.01, 1e-4


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


@dataclass
class Comparison:
    ok: bool
    count_reference: int
    count_exported: int
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    labels_equal: bool = True
    what: str = "detections"

    def __str__(self) -> str:
        if self.what == "probabilities":
            return (f"probabilities: largest difference {self.max_score_diff:.3g} (bound {SCORE_TOL:g}), "
                    f"same top class: {self.labels_equal} -> {'OK' if self.ok else 'DIFFERENT'}")
        return (f"detections: {self.count_exported} exported vs {self.count_reference} PyTorch, labels equal: "
                f"{self.labels_equal}, largest box difference {self.max_box_diff:.3g} px (bound {BOX_TOL:g}), "
                f"largest score difference {self.max_score_diff:.3g} (bound {SCORE_TOL:g}) -> "
                f"{'OK' if self.ok else 'DIFFERENT'}")


def _pairing(ref_boxes, ref_scores, ref_labels, boxes, scores, labels, box_tol, score_tol) -> np.ndarray:
    """Index into the reference for each exported detection (score order, then nearest same-label match)."""
    n = len(labels)
    order = np.arange(n)
    box_d = np.abs(boxes - ref_boxes).max(axis=1) if n else np.zeros(0)
    good = (labels == ref_labels) & (box_d <= box_tol) & (np.abs(scores - ref_scores) <= score_tol)
    if good.all():
        return order
    cost = (np.abs(boxes[:, None] - ref_boxes[None]).max(axis=2) / box_tol
            + np.abs(scores[:, None] - ref_scores[None]) / score_tol)
    cost[labels[:, None] != ref_labels[None]] = np.inf
    taken = np.zeros(n, bool)
    pairs = np.empty(n, np.int64)
    for i in np.argsort(cost.min(axis=1), kind="stable"):  # at most a few hundred detections
        row = np.where(taken, np.inf, cost[i])
        j = int(np.argmin(row))
        pairs[i], taken[j] = j, True
    return pairs


def compare_detections(reference: Dict, exported: Dict, box_tol: float = BOX_TOL,
                       score_tol: float = SCORE_TOL) -> Comparison:
    """Same number of detections, same labels, boxes within box_tol px and scores within score_tol."""
    rb, rs, rl = (_np(reference[k]) for k in ("boxes", "scores", "labels"))
    eb, es, el = (_np(exported[k]) for k in ("boxes", "scores", "labels"))
    rb, eb = rb.reshape(-1, 4).astype(np.float64), eb.reshape(-1, 4).astype(np.float64)
    rs, es = rs.astype(np.float64), es.astype(np.float64)
    rl, el = rl.astype(np.int64), el.astype(np.int64)
    if len(rl) != len(el):
        return Comparison(False, len(rl), len(el), labels_equal=False)
    if len(rl) == 0:
        return Comparison(True, 0, 0)
    j = _pairing(rb, rs, rl, eb, es, el, box_tol, score_tol)
    box = float(np.abs(eb - rb[j]).max())
    score = float(np.abs(es - rs[j]).max())
    labels = bool((el == rl[j]).all())
    return Comparison(labels and box <= box_tol and score <= score_tol, len(rl), len(el), box, score, labels)


def compare_probabilities(reference, exported, tol: float = SCORE_TOL) -> Comparison:
    """Probabilities [K] (or [B, K]) within tol, and the same most probable class."""
    r, e = _np(reference).astype(np.float64), _np(exported).astype(np.float64)
    if r.shape != e.shape:
        return Comparison(False, r.shape[-1], e.shape[-1], labels_equal=False, what="probabilities")
    diff = float(np.abs(r - e).max()) if r.size else 0.0
    top = bool((r.argmax(-1) == e.argmax(-1)).all())
    return Comparison(diff <= tol and top, r.shape[-1], e.shape[-1], max_score_diff=diff, labels_equal=top,
                      what="probabilities")
