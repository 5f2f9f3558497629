"""The classifier's Task (MODEL.META_ARCHITECTURE: classifier): data, feature cache, evaluation, demo drawing.

Training data: with the whole backbone frozen, no random augmentation and CLS.CACHE_FEATURES, the backbone's
features of the training images are computed once into OUTPUT_DIR/feature_cache (memory-mapped, keyed by the
weights, the image list and the transform) and the batches are lists of 1-D feature tensors (the classifier then
skips its backbone); otherwise they are images from the image-folder loader. Both orders are the same seeded
TrainingSampler's, so a head trained either way sees the same batches.
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Tuple

import torch
from torch import nn

from detection.engine.distributed import unwrap_model
from detection.engine.tasks import TASKS, Task
from detection.utils.dist import rank_and_world_size

logger = logging.getLogger(__name__)

__all__ = ["ClassificationTask", "feature_cache_decision"]


def feature_cache_decision(cfg, model: nn.Module) -> Tuple[bool, str]:
    """(use the feature cache?, why) for this config and (unwrapped) classifier."""
    from detection.data.classification import has_random_augmentation

    if not cfg.CLS.CACHE_FEATURES:
        return False, "CLS.CACHE_FEATURES is off"
    if not getattr(model, "backbone_frozen", False):
        return False, "part of the backbone trains (MODEL.FREEZE_AT / MODEL.CLS_HEAD.TRAINABLE_STAGES)"
    if has_random_augmentation(cfg):
        return False, ("training has random augmentation before the backbone (TRAIN.USE_FLIPPED / AUG.*): "
                       "features differ at every epoch")
    return True, "the whole backbone is frozen and there is no random augmentation"


@TASKS.register("classifier")
class ClassificationTask(Task):
    """Image classifier on the backbone registry (detection/modeling/classifier.py)."""

    best_metric = "accuracy"

    # -- model ----------------------------------------------------------------------------------------------------
    def needs_weights(self, cfg) -> bool:
        """False when the configured model is complete without training (MODEL.CLS_HEAD.PRETRAINED_LAYER with
        ImageNet weights): the demo and the evaluation can run it without --weights."""
        return not (cfg.MODEL.CLS_HEAD.PRETRAINED_LAYER and cfg.MODEL.BACKBONE.WEIGHTS)

    def summary(self, cfg, model: nn.Module) -> str:
        from detection.utils.summary import summarize_model

        m = unwrap_model(model)
        s = int(cfg.CLS.IMAGE_SIZE)
        device = next(m.parameters()).device
        notes = m.trainable_description() if hasattr(m, "trainable_description") else ""
        title = f"classifier: {cfg.MODEL.BACKBONE.NAME}, input [B, 3, {s}, {s}], {m.num_classes} classes"
        return summarize_model(m, ([torch.rand(3, s, s, device=device)],), title=title, notes=notes)

    # -- data -----------------------------------------------------------------------------------------------------
    def build_train_data(self, cfg, model: nn.Module, start_iter: int = 0):
        from detection.data.classification import (build_classification_dataset, build_classification_records,
                                                   build_classification_train_loader, train_seed)

        m = unwrap_model(model)
        records = build_classification_records(cfg, is_train=True)
        use_cache, why = feature_cache_decision(cfg, m)
        if not use_cache:
            logger.info("feature cache not used: %s", why)
            dataset = build_classification_dataset(cfg, is_train=True, records=records)
            return iter(build_classification_train_loader(cfg, dataset, start_iter=start_iter))
        logger.info("feature cache used: %s", why)
        rank, world = rank_and_world_size()
        cache = self.build_feature_cache(cfg, m, records)
        from detection.data.feature_cache import cached_batches

        return cached_batches(cache, int(cfg.TRAIN.IMS_PER_BATCH), train_seed(cfg), rank, world, start_iter)

    def build_feature_cache(self, cfg, model: nn.Module, records=None, name: str = "train", progress: bool = True):
        """The FeatureCache of the training set (computed by rank 0, others wait and read it)."""
        from detection.data.classification import build_classification_dataset, build_classification_records
        from detection.data.feature_cache import build_feature_cache, module_fingerprint, records_fingerprint
        from detection.engine.distributed import is_main_process, synchronize

        m = unwrap_model(model)
        if records is None:
            records = build_classification_records(cfg, is_train=True)
        dataset = build_classification_dataset(cfg, is_train=True, records=records, augment=False)
        key_parts = dict(
            weights=f"{m.backbone.name}:{module_fingerprint(m.backbone, exclude=('classifier_layer.',))}",
            images=records_fingerprint(dataset.records),
            transform=(f"{dataset.describe_transform()}; means={[round(float(v), 6) for v in cfg.PIXEL_MEANS]}; "
                       f"stds={[round(float(v), 6) for v in cfg.PIXEL_STDS]}"),
        )
        root = os.path.join(cfg.OUTPUT_DIR, "feature_cache")
        batch = max(int(cfg.TRAIN.IMS_PER_BATCH), int(cfg.TEST.IMS_PER_BATCH), 16)
        args = (root, name, dataset, m, key_parts, batch, int(cfg.DATA.NUM_WORKERS), progress)
        if is_main_process():
            cache = build_feature_cache(*args)
        synchronize()
        if not is_main_process():
            cache = build_feature_cache(*args)  # found on disk now
        return cache

    def build_test_data(self, cfg):
        from detection.data.classification import build_classification_dataset, build_classification_test_loader

        dataset = build_classification_dataset(cfg, is_train=False)
        return build_classification_test_loader(cfg, dataset), dataset

    def _find_class_names(self, cfg) -> List[str]:
        """ImageNet's names for MODEL.CLS_HEAD.PRETRAINED_LAYER, else DATA.CLASSES, else the sorted folder names
        of DATA.ROOT/DATA.TRAIN_SETS[0] (then DATA.TEST_SET), else class_0.. for MODEL.NUM_CLASSES; [] if none."""
        from detection.modeling.classifier import imagenet_class_names

        if cfg.MODEL.CLS_HEAD.PRETRAINED_LAYER:
            return imagenet_class_names(cfg.MODEL.BACKBONE.NAME)
        if cfg.DATA.CLASSES:
            return list(cfg.DATA.CLASSES)
        from detection.data.image_folder import find_classes

        for split in list(cfg.DATA.TRAIN_SETS) + [cfg.DATA.TEST_SET]:
            folder = os.path.join(os.path.expanduser(cfg.DATA.ROOT), split)
            if os.path.isdir(folder):
                found = find_classes(folder)
                if found:
                    return list(found)
        return [f"class_{i}" for i in range(int(cfg.MODEL.NUM_CLASSES))]

    def num_classes(self, cfg) -> int:
        """K: MODEL.NUM_CLASSES, else the resolved class names (1000 with the pretrained ImageNet layer)."""
        n = int(cfg.MODEL.NUM_CLASSES) or len(self.resolve_class_names(cfg))
        if n == 0:
            from detection.config import ConfigError

            raise ConfigError(f"cannot tell the number of classes: MODEL.NUM_CLASSES is 0, DATA.CLASSES is [] and "
                              f"no class folders were found under {cfg.DATA.ROOT}/{list(cfg.DATA.TRAIN_SETS)}; set "
                              f"MODEL.NUM_CLASSES or DATA.CLASSES")
        return n

    def resolved(self, cfg):
        if cfg.DATA.CLASSES or cfg.MODEL.CLS_HEAD.PRETRAINED_LAYER:
            return {}
        return {"CLASSES": self.resolve_class_names(cfg)}

    def build_evaluator(self, cfg, dataset, output_dir: Optional[str]):
        from detection.evaluation.classification import ClassificationEvaluator

        return ClassificationEvaluator(self.class_names(cfg, dataset), output_dir,
                                       analysis_images=int(cfg.CLS.ANALYSIS_IMAGES))
