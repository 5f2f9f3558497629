"""What the tools need from a model family, looked up by MODEL.META_ARCHITECTURE.

`tools/train_net.py`, `test_net.py` and `demo.py` never branch on the model family: they ask the task.

    task = get_task(cfg)                         # TASKS.get(cfg.MODEL.META_ARCHITECTURE)()
    names = task.resolve_class_names(cfg)        # DATA.CLASSES, or from the dataset (COCO categories, folders)
    model = task.build_model(cfg)                # sized by those names; cfg is never written to
    model = task.build_model_for_weights(cfg)    # the same, to be filled by a full checkpoint (no backbone file)
    resolved = task.resolved(cfg)                # {"CLASSES": [...]} for config.yaml's _RESOLVED_ section
    batches = task.build_train_data(cfg, model, start_iter)  # endless (images, targets), this process's share
    loader, dataset = task.build_test_data(cfg)  # finite, in order; targets carry `index` into dataset.records
    evaluator = task.build_evaluator(cfg, dataset, output_dir)
    runner = task.inference_module(cfg, model)   # the model or its test-time augmentation wrapper; build once
    picture = task.draw(cfg, image_rgb, output, class_names, score_thresh)
    record = task.to_json(output, class_names, score_thresh)
    text = task.summary(cfg, model)              # printed and saved as model_summary.txt by train_net

A family registers a subclass: ``@TASKS.register("classifier") class ClassificationTask(Task): ...`` in its own
module, imported by ``detection/engine/__init__.py``; this module imports no family.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from detection.registry import Registry

TASKS = Registry("task")


class Task:
    """The model-family-specific pieces of training, evaluation and demo; every method takes the config."""

    #: metric (a key of the evaluator's dict) that selects `model_best.pth` during periodic evaluation;
    #: '' = no best checkpoint. Higher is better.
    best_metric: str = ""

    def resolve_class_names(self, cfg) -> List[str]:
        """The class names the model is built for (labels 1..K for detection, 0..K-1 for classification):
        DATA.CLASSES, or what the family finds in the data when it is [] (the data layer may be read here,
        never by the model). A config dumped by train_net carries those names in its ``_RESOLVED_`` section; they
        are used when DATA.CLASSES and MODEL.NUM_CLASSES are unset, so a trained model needs no dataset to know its
        classes. Computed once per task object."""
        if getattr(self, "_class_names", None) is None:
            from detection.config.loading import RESOLVED_KEY

            recorded = (cfg.get(RESOLVED_KEY) or {}).get("CLASSES")
            if recorded and not cfg.DATA.CLASSES and not int(cfg.MODEL.NUM_CLASSES):
                self._class_names = list(recorded)
            else:
                self._class_names = list(self._find_class_names(cfg))
        return list(self._class_names)

    def _find_class_names(self, cfg) -> List[str]:
        return list(cfg.DATA.CLASSES)

    def num_classes(self, cfg) -> int:
        """Outputs of the model's classifier layer: MODEL.NUM_CLASSES, else from `resolve_class_names`."""
        return int(cfg.MODEL.NUM_CLASSES) or len(self.resolve_class_names(cfg))

    def resolved(self, cfg) -> Dict[str, Any]:
        """What was resolved at run time rather than written in the config (dumped as config.yaml's
        ``_RESOLVED_`` section): the class names when DATA.CLASSES is []."""
        if cfg.DATA.CLASSES or int(cfg.MODEL.NUM_CLASSES):
            return {}
        return {"CLASSES": self.resolve_class_names(cfg)}

    def build_model(self, cfg, load_backbone_weights: bool = True) -> nn.Module:
        """The model, sized by the resolved class names; load_backbone_weights=False builds the backbone without
        MODEL.BACKBONE.WEIGHTS."""
        from detection.modeling.build import build_model

        return build_model(cfg, num_classes=self.num_classes(cfg), load_backbone_weights=load_backbone_weights)

    def build_model_for_weights(self, cfg) -> nn.Module:
        """The model that `load_model_weights` is about to fill from a full checkpoint or detector file: its
        backbone is built without MODEL.BACKBONE.WEIGHTS, so no ImageNet file is needed."""
        return self.build_model(cfg, load_backbone_weights=False)

    def build_train_data(self, cfg, model: nn.Module, start_iter: int = 0) -> Iterator[Tuple[List[Any], List[Dict]]]:
        """An endless iterator of training batches ``(images, targets)`` for this process (rank-sharded),
        starting at batch `start_iter` of the seeded stream (a resumed run continues the same sequence).

        `model` is the (unwrapped) model being trained, for tasks that precompute features with its frozen parts.
        """
        raise NotImplementedError

    def build_test_data(self, cfg) -> Tuple[torch.utils.data.DataLoader, Any]:
        """(loader, dataset) over DATA.TEST_SET: batches ``(images, targets)`` in order, each target with
        ``index`` into ``dataset.records``."""
        raise NotImplementedError

    def build_evaluator(self, cfg, dataset, output_dir: Optional[str]):
        """A `detection.evaluation.evaluator.DatasetEvaluator` for `dataset`; it writes its files (results,
        plots) under `output_dir` when that is not None."""
        raise NotImplementedError

    def needs_weights(self, cfg) -> bool:
        """Whether inference needs a trained checkpoint (False for a model complete from pretrained weights)."""
        return True

    def class_names(self, cfg, dataset=None) -> List[str]:
        """Names of labels 1..K (detection) or 0..K-1 (classification); from `dataset` when given."""
        if dataset is not None and getattr(dataset, "class_names", None):
            return list(dataset.class_names)
        return self.resolve_class_names(cfg)

    def inference_module(self, cfg, model: nn.Module) -> nn.Module:
        """What prediction calls, built once by its caller: the (unwrapped) model, or its test-time-augmentation
        wrapper under TEST.SCALES / TEST.FLIP / TEST.TEN_CROP (detection/modeling/tta.py). Eval mode and no_grad
        are the caller's."""
        from detection.engine.distributed import unwrap_model
        from detection.modeling.tta import build_tta

        return build_tta(cfg, unwrap_model(model))

    def draw(self, cfg, image_rgb: np.ndarray, output: Dict[str, torch.Tensor], class_names: Sequence[str],
             score_thresh: float) -> np.ndarray:
        """uint8 [H, W, 3] RGB picture of one output drawn on its image (detection/utils/outputs.py)."""
        from detection.utils.outputs import draw_output

        return draw_output(image_rgb, output, class_names, score_thresh)

    def to_json(self, output: Dict[str, torch.Tensor], class_names: Sequence[str], score_thresh: float) -> Dict:
        """A JSON-friendly dict of one image's output (detections above `score_thresh`, or top labels)."""
        from detection.utils.outputs import output_to_json

        return output_to_json(output, class_names, score_thresh)

    def summary(self, cfg, model: nn.Module) -> str:
        """Text describing the model printed at the start of training (default: parameter counts)."""
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return f"{type(model).__name__}: {total:,} parameters, {trainable:,} trainable, {total - trainable:,} frozen"


def get_task(cfg) -> Task:
    """The task of cfg.MODEL.META_ARCHITECTURE (a new instance)."""
    return TASKS.get(cfg.MODEL.META_ARCHITECTURE)()
