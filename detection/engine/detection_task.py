"""The Faster R-CNN task: VOC/COCO/YOLO loaders, the dataset's evaluator, test-time augmentation, drawing.

Test-time augmentation (TEST.SCALES with several sizes, TEST.FLIP) is the wrapper module of
detection/modeling/tta.py (Task.inference_module); drawing and JSON records are detection/utils/outputs.py's.
"""
from __future__ import annotations

import logging
import os
from typing import List

import torch

from detection.engine.tasks import TASKS, Task
from detection.evaluation.coco import COCOEvaluator  # pycocotools is imported only when evaluating

logger = logging.getLogger(__name__)


def coco_category_names(cfg) -> List[str]:
    """Category names of the first DATA.TRAIN_SETS JSON, sorted by category id."""
    from detection.data.build import resolve_coco_set
    from detection.data.coco import coco_category_maps, read_coco_json

    entry = cfg.DATA.TRAIN_SETS[0] if cfg.DATA.TRAIN_SETS else cfg.DATA.TEST_SET
    path, _ = resolve_coco_set(os.path.expanduser(cfg.DATA.ROOT), entry)
    return list(coco_category_maps(read_coco_json(path)["categories"], path)[0])  # errors name the file


@TASKS.register("faster_rcnn")
class DetectionTask(Task):
    """Faster R-CNN on VOC- or COCO-format data; `model_best.pth` follows VOC mAP (COCO: bbox AP)."""

    best_metric = "mAP"

    def _find_class_names(self, cfg):
        """DATA.CLASSES; with DATA.CLASSES [] the named list DATA.CLASSES_FROM (e.g. torchvision's COCO labels),
        else for COCO data the training JSON's categories in id order (as the COCO reader orders them)."""
        if not cfg.DATA.CLASSES and cfg.DATA.CLASSES_FROM:
            from detection.data.categories import named_class_list

            return named_class_list(cfg.DATA.CLASSES_FROM)
        if not cfg.DATA.CLASSES and not int(cfg.MODEL.NUM_CLASSES) and cfg.DATA.FORMAT == "coco":
            return coco_category_names(cfg)
        if not cfg.DATA.CLASSES and not int(cfg.MODEL.NUM_CLASSES) and cfg.DATA.FORMAT == "yolo":
            from detection.data.yolo import find_data_yaml, read_data_yaml

            return read_data_yaml(find_data_yaml(cfg.DATA.ROOT))[1]
        return list(cfg.DATA.CLASSES)

    def num_classes(self, cfg):
        """K + 1 (background): MODEL.NUM_CLASSES, else the resolved class names + 1."""
        if int(cfg.MODEL.NUM_CLASSES):
            return int(cfg.MODEL.NUM_CLASSES)
        names = self.resolve_class_names(cfg)
        if not names:
            from detection.config import ConfigError

            raise ConfigError("MODEL.NUM_CLASSES is 0 and DATA.CLASSES is empty: set DATA.CLASSES (or, for COCO "
                              "data, leave it [] to take the categories of the training JSON) or MODEL.NUM_CLASSES")
        return len(names) + 1

    def build_model(self, cfg, load_backbone_weights: bool = True):
        """Faster R-CNN sized by the resolved class names; placeholder names ('N/A' in torchvision's COCO list) are
        passed on as labels never reported."""
        from detection.data.categories import is_placeholder, reported_mask
        from detection.modeling.build import build_model

        num_classes = self.num_classes(cfg)
        names = self.resolve_class_names(cfg)
        reported = None
        if len(names) + 1 == num_classes and any(is_placeholder(n) for n in names):
            reported = reported_mask(names)
        return build_model(cfg, num_classes=num_classes, reported_classes=reported,
                           load_backbone_weights=load_backbone_weights)

    def build_train_data(self, cfg, model, start_iter=0):
        from detection.data.build import build_detection_dataset, build_detection_train_loader

        self.train_dataset = build_detection_dataset(cfg, is_train=True)
        return iter(build_detection_train_loader(cfg, self.train_dataset, start_iter=start_iter))

    def build_test_data(self, cfg):
        from detection.data.build import build_detection_dataset, build_detection_test_loader

        dataset = build_detection_dataset(cfg, is_train=False)
        return build_detection_test_loader(cfg, dataset), dataset

    def build_evaluator(self, cfg, dataset, output_dir):
        """VOCEvaluator against the split's own annotations (devkit rules), or COCOEvaluator on the JSON (YOLO data:
        on the records as a COCO dict); all report `mAP` (VOC at IoU 0.5; COCO: AP50 as `mAP`, the 12 COCO numbers
        under `bbox`)."""
        from detection.evaluation.voc import VOCEvaluator

        meta = getattr(dataset, "meta", {}) or {}
        names = list(dataset.class_names)
        if meta.get("format") == "voc":
            from detection.data.voc import resolve_voc_set

            root, split = resolve_voc_set(os.path.expanduser(cfg.DATA.ROOT), cfg.DATA.TEST_SET)
            return VOCEvaluator(root, split, names, use_07_metric=cfg.TEST.VOC_07_METRIC, rules=cfg.TEST.VOC_RULES,
                                output_dir=output_dir, plots=output_dir is not None)
        if meta.get("format") == "coco":
            return COCOEvaluatorWithMAP(meta["annotation_file"], meta.get("contiguous_to_coco_id"),
                                        output_dir=output_dir)
        if meta.get("format") == "yolo":  # scored as Ultralytics reports it: COCO's AP (pycocotools), AP50 as mAP
            from detection.data.convert import records_to_coco

            return COCOEvaluatorWithMAP(records_to_coco(dataset.records, names), list(range(1, len(names) + 1)),
                                        output_dir=output_dir)
        raise ValueError(f"no evaluator for DATA.FORMAT {cfg.DATA.FORMAT!r}")

    def summary(self, cfg, model):
        """The layer table (detection.utils.summary) of one eval-mode pass on a TEST.SCALES[0]-sized image: each
        layer's output shape (RoI-head rows are per RoI), parameters and whether it trains, with totals."""
        from detection.engine.distributed import unwrap_model
        from detection.utils.summary import summarize_model

        net = unwrap_model(model)
        side = int(cfg.TEST.SCALES[0])
        device = next(net.parameters()).device
        title = (f"faster_rcnn: {cfg.MODEL.BACKBONE.NAME} trunk, {cfg.MODEL.ROI_HEADS.BOX_HEAD} box head, "
                 f"{net.roi_heads.num_classes} classes (incl. background), input [3, {side}, {side}]")
        return summarize_model(net, ([torch.rand(3, side, side, device=device)],), title=title)


class COCOEvaluatorWithMAP(COCOEvaluator):
    """COCOEvaluator whose metrics also carry `mAP` (= COCO AP50, a fraction; -1 when undefined) for
    best-checkpoint picking and the tools' one-line summary."""

    def evaluate(self) -> dict:
        metrics = super().evaluate()
        return {**metrics, "mAP": float(metrics["bbox"]["AP50"])}
