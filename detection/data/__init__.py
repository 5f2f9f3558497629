"""Data: readers (VOC, COCO, YOLO, image folders) -> records -> datasets (+ albumentations augmentation) -> samplers
and loaders, for the detector and the classifier.

Owns reading and augmenting data; no resizing (the model resizes, detection/ops/resize.py) and no generated data
(detection/datasets/). May import ``detection.ops``, ``detection.utils`` and ``detection.config``; must not import
``detection.modeling``, ``detection.evaluation`` or ``detection.engine``.

Names are imported lazily, so ``import detection.data.voc`` does not import albumentations or torch's loader.
See detection/data/records.py for the record contract.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise checks for updates online

_EXPORTS = {
    "records": ["AnnotationError", "ReadStats", "DetectionRecords", "make_record", "clip_and_filter_boxes",
                "check_image_header", "trainable_mask", "filter_empty_records", "check_records"],
    "image_io": ["ImageReadError", "read_image_rgb"],
    "voc": ["VOC_CLASSES", "load_voc", "parse_voc_xml", "resolve_voc_set", "to_voc_pixels", "from_voc_pixels"],
    "coco": ["load_coco", "read_coco_json", "coco_category_maps"],
    "yolo": ["load_yolo", "read_data_yaml", "find_data_yaml", "parse_yolo_label_file", "yolo_label_path"],
    "convert": ["records_to_coco", "write_voc", "write_coco", "write_yolo"],
    "dataset": ["DetectionDataset", "aspect_ratio_group_ids"],
    "transforms": ["RandomAreaCrop", "DetectionTransform", "make_detection_transform", "build_transform"],
    "samplers": ["TrainingSampler", "InferenceSampler", "GroupedBatchSampler"],
    "build": ["collate_detection", "worker_init_fn", "resolve_coco_set", "build_detection_records",
              "build_detection_dataset", "build_detection_train_loader", "build_detection_test_loader"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'detection.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"detection.data.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
