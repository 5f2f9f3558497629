"""One image's model output as a picture or a JSON record: what tools/demo.py writes and the API's results show.

    picture = draw_output(image_rgb, output, class_names, score_thresh)   # uint8 [H', W', 3] RGB
    record = output_to_json(output, class_names, score_thresh)            # JSON-friendly dict

`output` is a dict of the model contract: a detector's boxes [N, 4] (xyxy, the image's pixels) / scores [N] /
labels [N] (1..K), or a classifier's probs [K] / scores [K] / labels [K] (sorted by decreasing probability). The
functions tell them apart by their keys, so every model family's output is drawn and serialised the same way
wherever it comes from.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

__all__ = ["draw_output", "output_to_json", "is_detection"]


def is_detection(output: Dict[str, torch.Tensor]) -> bool:
    """True for a detector's output (boxes, scores, labels), False for a classifier's (probs, scores, labels)."""
    if "boxes" in output:
        return True
    if "probs" in output:
        return False
    raise TypeError(f"an output with keys {sorted(output)} is neither detections (boxes, scores, labels) nor class "
                    f"probabilities (probs, scores, labels)")


def _class_name(class_names: Sequence[str], label: int, detection: bool) -> str:
    index = label - 1 if detection else label  # detector labels are 1..K, classifier labels 0..K-1
    return class_names[index] if 0 <= index < len(class_names) else str(label)


def _top(output: Dict[str, torch.Tensor], k: int) -> List[Tuple[int, float]]:
    labels = output["labels"][:k].tolist()
    scores = output["scores"][:k].tolist()
    return list(zip((int(v) for v in labels), (float(v) for v in scores)))


def draw_output(image_rgb: np.ndarray, output: Dict[str, torch.Tensor], class_names: Sequence[str],
                score_thresh: float = 0.5) -> np.ndarray:
    """A new uint8 RGB picture: a detector's boxes scoring at least `score_thresh` with their class and score (same
    size as the image), or the image under a banner of a classifier's top label(s) (top-1 for two classes, else
    top-5; lines below `score_thresh` are grey)."""
    from detection.utils.visualize import draw_classification, draw_detections

    if is_detection(output):
        keep = output["scores"] >= score_thresh
        return draw_detections(image_rgb, output["boxes"][keep], output["labels"][keep], output["scores"][keep],
                               class_names=class_names)
    n = int(output["labels"].numel())
    top = _top(output, 1 if n <= 2 else min(5, n))
    lines = [f"{_class_name(class_names, lab, False)} {p:.3f}" for lab, p in top]
    colors = [(255, 255, 255) if (j == 0 or p >= score_thresh) else (150, 150, 150) for j, (_, p) in enumerate(top)]
    return draw_classification(image_rgb, lines, line_colors=colors)


def output_to_json(output: Dict[str, torch.Tensor], class_names: Sequence[str], score_thresh: float = 0.0) -> Dict:
    """A detector's {"detections": [{box_xyxy, label, class, score}]} above `score_thresh`, or a classifier's
    {class, label_id, probability, top: [...]}: the prediction and the top-5 (every class when there are fewer),
    highest first (score_thresh is not applied: the top-1 always shows)."""
    if is_detection(output):
        keep = (output["scores"] >= score_thresh).cpu()
        boxes = output["boxes"].detach().cpu()[keep].tolist()
        labels = output["labels"].detach().cpu()[keep].tolist()
        scores = output["scores"].detach().cpu()[keep].tolist()
        return {"detections": [{"box_xyxy": [round(v, 2) for v in b], "label": int(lab),
                                "class": _class_name(class_names, int(lab), True), "score": round(s, 5)}
                               for b, lab, s in zip(boxes, labels, scores)]}
    top = _top(output, min(5, int(output["labels"].numel())))
    lab, p = top[0]
    return {"class": _class_name(class_names, lab, False), "label_id": lab, "probability": round(p, 6),
            "top": [{"class": _class_name(class_names, c, False), "label_id": c, "probability": round(q, 6)}
                    for c, q in top]}
