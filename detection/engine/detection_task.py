"""The Faster R-CNN task: VOC/COCO loaders, the dataset's evaluator, test-time augmentation, drawing.

Test-time augmentation (TEST.SCALES with several sizes, TEST.FLIP): every view's class-specific candidate boxes
(score-thresholded, before the final NMS) are mapped back to the original image, pooled, and one per-class NMS +
top-k (TEST.NMS, TEST.DETECTIONS_PER_IMAGE) picks the final detections - the py-faster-rcnn / detectron2 rule of
merging before NMS rather than voting over already-suppressed outputs.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Dict, List, Sequence

import torch

from detection.engine.tasks import TASKS, Task
from detection.evaluation.coco import COCOEvaluator  # pycocotools is imported only when evaluating

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _view_settings(model, min_size: int, raw: bool):
    """Temporarily set the test resize (shortest side `min_size`) and, when `raw`, switch off the final NMS and
    top-k so the RoI heads return every score-thresholded candidate."""
    pre, heads = model.preprocess, model.roi_heads
    saved = (pre.test_min_size, heads.nms_thresh, heads.detections_per_image)
    pre.test_min_size = int(min_size)
    if raw:
        heads.nms_thresh, heads.detections_per_image = 1.0, 1 << 30  # IoU is never > 1: nothing is suppressed
    try:
        yield
    finally:
        pre.test_min_size, heads.nms_thresh, heads.detections_per_image = saved


def _flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """xyxy [M, 4] boxes mirrored in an image of `width` pixels (continuous coordinates)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def merge_detections(views: Sequence[Dict[str, torch.Tensor]], nms_thresh: float, max_dets: int
                     ) -> Dict[str, torch.Tensor]:
    """Pool one image's candidates from several views (same image coordinates) and keep the per-class NMS
    survivors, at most `max_dets`, by decreasing score. views: dicts of boxes [M_i, 4], scores [M_i], labels [M_i]."""
    from detection.ops import batched_nms

    boxes = torch.cat([v["boxes"] for v in views])
    scores = torch.cat([v["scores"] for v in views])
    labels = torch.cat([v["labels"] for v in views])
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def coco_category_names(cfg) -> List[str]:
    """Category names of the first DATA.TRAIN_SETS JSON, sorted by category id."""
    import json

    from detection.data.build import resolve_coco_set

    entry = cfg.DATA.TRAIN_SETS[0] if cfg.DATA.TRAIN_SETS else cfg.DATA.TEST_SET
    path, _ = resolve_coco_set(os.path.expanduser(cfg.DATA.ROOT), entry)
    try:
        with open(path) as f:
            cats = json.load(f)["categories"]
        return [c["name"] for c in sorted(cats, key=lambda c: int(c["id"]))]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the categories for DATA.CLASSES: {exc}") from exc


@TASKS.register("faster_rcnn")
class DetectionTask(Task):
    """Faster R-CNN on VOC- or COCO-format data; `model_best.pth` follows VOC mAP (COCO: bbox AP)."""

    best_metric = "mAP"

    def build_model(self, cfg):
        """Faster R-CNN. With DATA.CLASSES [], DATA.CLASSES is first filled in (in `cfg`): from DATA.CLASSES_FROM
        when set (e.g. torchvision's COCO list), else for COCO data with MODEL.NUM_CLASSES 0 from the training JSON's
        categories, in id order, as the COCO reader orders them."""
        if not cfg.DATA.CLASSES and cfg.DATA.CLASSES_FROM:
            from detection.data.categories import named_class_list

            cfg.DATA.CLASSES = named_class_list(cfg.DATA.CLASSES_FROM)
        if not cfg.DATA.CLASSES and not int(cfg.MODEL.NUM_CLASSES) and cfg.DATA.FORMAT == "coco":
            cfg.DATA.CLASSES = coco_category_names(cfg)
        return super().build_model(cfg)

    def build_model_for_weights(self, cfg):
        """The model that a full checkpoint or torchvision detector file is about to fill: its backbone is built
        without MODEL.BACKBONE.WEIGHTS, so no ImageNet file is needed."""
        from detection.modeling.backbone.base import backbone_weights_come_later

        with backbone_weights_come_later():
            return self.build_model(cfg)

    def build_train_data(self, cfg, model, start_iter=0):
        from detection.data.build import build_detection_dataset, build_detection_train_loader

        self.train_dataset = build_detection_dataset(cfg, is_train=True)
        return iter(build_detection_train_loader(cfg, self.train_dataset, start_iter=start_iter))

    def class_names(self, cfg, dataset=None):
        """DATA.CLASSES, or for COCO with DATA.CLASSES [] the names the reader took from the JSON."""
        dataset = dataset if dataset is not None else getattr(self, "train_dataset", None)
        return super().class_names(cfg, dataset)

    def build_test_data(self, cfg):
        from detection.data.build import build_detection_dataset, build_detection_test_loader

        dataset = build_detection_dataset(cfg, is_train=False)
        return build_detection_test_loader(cfg, dataset), dataset

    def build_evaluator(self, cfg, dataset, output_dir):
        """VOCEvaluator against the split's own annotations (devkit rules), or COCOEvaluator on the JSON; both
        report `mAP` (VOC at IoU 0.5; COCO: AP50 as `mAP`, the 12 COCO numbers under `bbox`)."""
        from detection.evaluation.voc import VOCEvaluator

        meta = getattr(dataset, "meta", {}) or {}
        names = list(dataset.class_names)
        if meta.get("format") == "voc":
            from detection.data.voc import resolve_voc_set

            root, split = resolve_voc_set(os.path.expanduser(cfg.DATA.ROOT), cfg.DATA.TEST_SET)
            return VOCEvaluator(root, split, names, use_07_metric=bool(cfg.TEST.VOC_07_METRIC),
                                output_dir=output_dir, plots=output_dir is not None)
        if meta.get("format") == "coco":
            return COCOEvaluatorWithMAP(meta["annotation_file"], meta.get("contiguous_to_coco_id"),
                                        output_dir=output_dir)
        raise ValueError(f"no evaluator for DATA.FORMAT {cfg.DATA.FORMAT!r}")

    @torch.no_grad()
    def predict(self, cfg, model, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        from detection.engine.checkpoint import unwrap_model

        net = unwrap_model(model)
        scales = [int(s) for s in cfg.TEST.SCALES]
        flips = (False, True) if cfg.TEST.FLIP else (False,)
        if len(scales) == 1 and len(flips) == 1:
            with _view_settings(net, scales[0], raw=False):
                return net(images)
        per_image: List[List[Dict[str, torch.Tensor]]] = [[] for _ in images]
        for scale in scales:
            for flip in flips:
                view = [img.flip(-1) for img in images] if flip else images
                with _view_settings(net, scale, raw=True):
                    outputs = net(view)
                for i, out in enumerate(outputs):
                    if flip:
                        out = {**out, "boxes": _flip_boxes(out["boxes"], images[i].shape[-1])}
                    per_image[i].append(out)
        heads = net.roi_heads
        return [merge_detections(views, heads.nms_thresh, heads.detections_per_image) for views in per_image]

    def summary(self, cfg, model):
        """The layer table (detection.utils.summary) of one eval-mode pass on a TEST.SCALES[0]-sized image: each
        layer's output shape (RoI-head rows are per RoI), parameters and whether it trains, with totals."""
        from detection.engine.checkpoint import unwrap_model
        from detection.utils.summary import summarize_model

        net = unwrap_model(model)
        side = int(cfg.TEST.SCALES[0])
        device = next(net.parameters()).device
        title = (f"faster_rcnn: {cfg.MODEL.BACKBONE.NAME} trunk, {cfg.MODEL.ROI_HEADS.BOX_HEAD} box head, "
                 f"{net.roi_heads.num_classes} classes (incl. background), input [3, {side}, {side}]")
        return summarize_model(net, ([torch.rand(3, side, side, device=device)],), title=title)

    def draw(self, cfg, image_rgb, output, class_names, score_thresh):
        from detection.utils.visualize import draw_detections

        keep = output["scores"] >= score_thresh
        return draw_detections(image_rgb, output["boxes"][keep], output["labels"][keep], output["scores"][keep],
                               class_names=class_names)

    def to_json(self, output, class_names, score_thresh):
        keep = (output["scores"] >= score_thresh).cpu()
        boxes = output["boxes"].detach().cpu()[keep].tolist()
        labels = output["labels"].detach().cpu()[keep].tolist()
        scores = output["scores"].detach().cpu()[keep].tolist()
        dets = [{"box_xyxy": [round(v, 2) for v in b], "label": int(lab),
                 "class": class_names[lab - 1] if 0 < lab <= len(class_names) else str(lab), "score": round(s, 5)}
                for b, lab, s in zip(boxes, labels, scores)]
        return {"detections": dets}


class COCOEvaluatorWithMAP(COCOEvaluator):
    """COCOEvaluator whose metrics also carry `mAP` (= COCO AP50, a fraction; -1 when undefined) for
    best-checkpoint picking and the tools' one-line summary."""

    def evaluate(self) -> dict:
        metrics = super().evaluate()
        return {**metrics, "mAP": float(metrics["bbox"]["AP50"])}
