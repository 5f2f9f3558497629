"""What the Python API returns for one image: plain numpy results that can draw and describe themselves.

    r = model("photo.jpg")                          # a DetectionResult (detector) or ClassificationResult
    r.boxes, r.scores, r.labels, r.class_names      # detector: [N, 4] xyxy in the input's pixels, [N], [N] 1..K
    r.top_k(5), r.probs, r.class_name, r.score      # classifier
    r.to_dict(); r.draw() -> uint8 [H, W, 3] RGB; r.show()

Results are plain data: the model contract's output dict (`boxes`/`scores`/`labels` or `probs`/`scores`/`labels`),
the input picture and the class names. Drawing and the dict form are detection/utils/outputs.py's functions, the
same that make tools/demo.py's pictures and detections.json.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["DetectionResult", "ClassificationResult", "make_result"]


class _Result:
    """Shared parts: the output, the input picture and the class names; drawing, the dict form, notebook display."""

    def __init__(self, output: Dict[str, torch.Tensor], picture: np.ndarray, categories: Sequence[str]):
        self.output = {k: v.detach().cpu() for k, v in output.items()}
        self.image = picture  #: the input as uint8 [H, W, 3] RGB (what draw() draws on)
        self.categories = list(categories)  #: the model's class list (detector: labels 1..K are its entries)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def draw(self, score_thresh: float = 0.5) -> np.ndarray:
        """A new uint8 [H', W', 3] RGB picture: the detections scoring at least `score_thresh` (detector: same
        size as the input) or a banner of the top classes above the image (classifier)."""
        from detection.utils.outputs import draw_output

        return draw_output(self.image, self.output, self.categories, score_thresh)

    def to_dict(self, score_thresh: float = 0.0) -> Dict:
        """JSON-friendly dict: height, width and the output's record (tools/demo.py's detections.json entries)."""
        from detection.utils.outputs import output_to_json

        return {"height": self.height, "width": self.width, **output_to_json(self.output, self.categories,
                                                                             score_thresh)}

    def show(self, score_thresh: float = 0.5):
        """Display draw() in a notebook (IPython), else in a matplotlib window."""
        picture = self.draw(score_thresh)
        try:
            from IPython.display import display
            from PIL import Image
        except ImportError:
            import matplotlib.pyplot as plt

            plt.figure(figsize=(picture.shape[1] / 100, picture.shape[0] / 100))
            plt.imshow(picture)
            plt.axis("off")
            plt.show()
            return None
        display(Image.fromarray(picture))
        return None

    def _repr_png_(self) -> bytes:  # a result as the last line of a notebook cell shows its picture
        import cv2

        ok, data = cv2.imencode(".png", self.draw()[..., ::-1])
        return data.tobytes() if ok else b""


class DetectionResult(_Result):
    """Detections of one image, by decreasing score.

    boxes: float32 [N, 4] xyxy in the input image's pixels (continuous: width = x2 - x1); scores: float32 [N];
    labels: int64 [N] in 1..K (0 is background and never returned); class_names: [N] names of the labels;
    categories: the model's K class names.
    """

    @property
    def boxes(self) -> np.ndarray:
        return self.output["boxes"].numpy().astype(np.float32, copy=False).reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        return self.output["scores"].numpy().astype(np.float32, copy=False)

    @property
    def labels(self) -> np.ndarray:
        return self.output["labels"].numpy().astype(np.int64, copy=False)

    @property
    def class_names(self) -> List[str]:
        k = len(self.categories)
        return [self.categories[lab - 1] if 0 < lab <= k else str(int(lab)) for lab in self.labels.tolist()]

    def __len__(self) -> int:
        return int(self.output["scores"].numel())

    def above(self, score_thresh: float) -> "DetectionResult":
        """The detections scoring at least `score_thresh`, as a new result."""
        keep = self.output["scores"] >= score_thresh
        out = {k: v[keep] for k, v in self.output.items()}
        return DetectionResult(out, self.image, self.categories)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.class_names[:5], self.scores[:5].tolist()))
        more = ", ..." if len(self) > 5 else ""
        return f"DetectionResult({len(self)} detections on {self.height}x{self.width}: {shown}{more})"


class ClassificationResult(_Result):
    """Class probabilities of one image.

    probs: float32 [K] in class order; labels / scores: [K] class ids and probabilities sorted by decreasing
    probability; class_names: the K class names in class order; label / class_name / score: the prediction.
    """

    @property
    def probs(self) -> np.ndarray:
        return self.output["probs"].numpy().astype(np.float32, copy=False)

    @property
    def labels(self) -> np.ndarray:
        return self.output["labels"].numpy().astype(np.int64, copy=False)

    @property
    def scores(self) -> np.ndarray:
        return self.output["scores"].numpy().astype(np.float32, copy=False)

    @property
    def class_names(self) -> List[str]:
        return list(self.categories)

    def _name(self, label: int) -> str:
        return self.categories[label] if 0 <= label < len(self.categories) else str(label)

    @property
    def label(self) -> int:
        return int(self.labels[0])

    @property
    def class_name(self) -> str:
        return self._name(self.label)

    @property
    def score(self) -> float:
        return float(self.scores[0])

    def top_k(self, k: int = 5) -> List[Tuple[str, float]]:
        """[(class name, probability)] of the k most probable classes, most probable first."""
        return [(self._name(int(lab)), float(p)) for lab, p in zip(self.labels[:k], self.scores[:k])]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n} {p:.3f}" for n, p in self.top_k(3))
        return f"ClassificationResult({shown})"


def make_result(output: Dict[str, torch.Tensor], picture: np.ndarray, categories: Sequence[str],
                what: Optional[str] = None) -> _Result:
    """The result class for an output dict of the model contract."""
    if "boxes" in output:
        return DetectionResult(output, picture, categories)
    if "probs" in output:
        return ClassificationResult(output, picture, categories)
    raise TypeError(f"{what or 'the model'} returned keys {sorted(output)}: neither detections (boxes, scores, "
                    f"labels) nor class probabilities (probs, scores, labels)")
