"""The single-image modules that ONNX and torch.export record: the eager model itself, flattened.

    net = DetectorExport(model)          # model: an eval-mode FasterRCNN
    boxes, scores, labels = net(image)   # image [3, H, W] float RGB 0..1 -> [N, 4] xyxy (input pixels), [N], [N]
    net = ClassifierExport(model)        # model: an ImageClassifier
    logits, probs = net(image)           # [3, H, W] -> [K], [K]

There is one inference path: `DetectorExport` is `model([image])[0]` as a tuple. The eager modules branch
locally wherever a size would become a Python number (detection/ops/shapes.py: the resize, the anchor grid, the
pre-NMS top-k, the multi-level pooling, the class-wise NMS, the detection top-k), so a tracer records sizes that
follow the input: under `torch.jit.trace` (the ONNX exporter) as 0-d tensors, under `torch.export` as symbolic
integers, unbacked where they depend on the data. Test-time augmentation is not part of it (one view at
TEST.SCALES[0], the model's own test resize).
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

__all__ = ["DetectorExport", "ClassifierExport", "export_module", "INPUT_NAMES", "OUTPUT_NAMES"]


class DetectorExport(nn.Module):
    """forward(image [3, H, W] float32 RGB 0..1) -> boxes [N, 4] float32 xyxy in the image's pixels, scores [N]
    float32, labels [N] int64 in 1..K, by decreasing score: `model([image])[0]` (N = 0 when nothing scores above
    TEST.SCORE_THRESH)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        det = self.model([image])[0]
        return det["boxes"], det["scores"], det["labels"]


class ClassifierExport(nn.Module):
    """forward(image [3, H, W] float32 RGB 0..1) -> (logits [K], probabilities [K]): the classifier's own
    preprocess (its square resize, detection/ops/resize.py), backbone features and head, for one image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        logits = self.model.logits(self.model.extract_features([image]))[0]
        return logits, logits.float().softmax(dim=0)


def export_module(model: nn.Module) -> nn.Module:
    """The single-image module to export for `model`: DetectorExport (a FasterRCNN) or ClassifierExport."""
    from detection.modeling.classifier import ImageClassifier
    from detection.modeling.faster_rcnn import FasterRCNN

    if isinstance(model, FasterRCNN):
        return DetectorExport(model).eval()
    if isinstance(model, ImageClassifier):
        return ClassifierExport(model).eval()
    raise TypeError(f"no export for a {type(model).__name__} (FasterRCNN and ImageClassifier export)")


#: input and output names of the exported files, by module
INPUT_NAMES = ["image"]
OUTPUT_NAMES = {DetectorExport: ["boxes", "scores", "labels"], ClassifierExport: ["logits", "probabilities"]}
