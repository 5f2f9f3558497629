"""A small common interface for dataset evaluators (detectron2's DatasetEvaluator, without the distributed parts).

An evaluator is fed batches during inference and computes its metrics once at the end::

    evaluator.reset()
    for records, images in loader:
        outputs = model(images)              # list of dict(boxes [M, 4] xyxy continuous, scores [M], labels [M])
        evaluator.process(records, outputs)  # records: the data reader's dicts (image_id, height, width, ...)
    metrics = evaluator.evaluate()           # a JSON-friendly dict

Outputs may hold numpy arrays or torch tensors (on any device); evaluators convert them with `to_numpy`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


class EvaluationInputError(ValueError):
    """Malformed evaluation input (a results file, an annotation file, arrays of the wrong shape).

    The message names the file (and the line or entry) at fault; tools turn it into exit code 2.
    """


def to_numpy(x: Any, dtype=None) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device, with or without grad) or a sequence."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def json_safe(obj: Any) -> Any:
    """A copy of nested dicts/lists of floats with NaN and infinities as None (JSON has no NaN) and numpy scalars
    as Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class DatasetEvaluator:
    """Base class: accumulate model outputs with `process`, compute metrics with `evaluate`."""

    def reset(self) -> None:
        """Forget everything processed so far (called before an evaluation run)."""

    def process(self, records: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        """Take one batch: `records[i]` is the data reader's record of the image whose model output is `outputs[i]`
        (dict(boxes [M, 4] xyxy continuous pixels of the original image, scores [M], labels [M] in 1..K))."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """The metrics of everything processed since the last reset, as a JSON-friendly dict."""
        raise NotImplementedError


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators driven as one; `evaluate` merges their metric dicts (later keys win)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]):
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, records, outputs) -> None:
        for evaluator in self.evaluators:
            evaluator.process(records, outputs)

    def evaluate(self) -> dict:
        metrics: dict = {}
        for evaluator in self.evaluators:
            metrics.update(evaluator.evaluate() or {})
        return metrics
