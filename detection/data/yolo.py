"""YOLO-format datasets (the Ultralytics layout most annotation tools export): data.yaml + images/ + labels/.

    data.yaml                      path: .                  # optional; relative to data.yaml's folder
    images/train/a.jpg             train: images/train      # a folder, a .txt list of images, or a list of these
    labels/train/a.txt             val: images/val
                                   names: [circle, square]  # or {0: circle, 1: square}

A label file sits where its image is, with the last ``images`` folder of the path replaced by ``labels`` and the
extension by ``.txt`` (Ultralytics' rule). One line per box: ``class cx cy w h``, class 0..K-1 (label 1..K here),
the centre and size normalised by the image's width and height; a segmentation line ``class x1 y1 x2 y2 ...`` (three
points or more) gives the box around its points. The image's size is read from its header (EXIF orientation
applied, as the images are read). Boxes become continuous xyxy pixels, clipped to the image (counted) and degenerate
ones dropped (warned), as in the VOC and COCO readers.

Errors (AnnotationError) name the file and, for a bad line, its number: not numbers, a wrong count of values, a
class id outside 0..K-1, a coordinate outside [0, 1]; an image listed twice; a split missing from data.yaml.
Images without a label file (or with an empty one) are background images: ``unlabeled='negative'`` keeps them as
records without boxes (Ultralytics' rule), ``'drop'`` leaves them out (DATA.YOLO_UNLABELED).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from detection.data.records import (
    AnnotationError,
    DetectionRecords,
    ReadStats,
    check_image_header,
    clip_and_filter_boxes,
    make_record,
)

logger = logging.getLogger(__name__)

__all__ = ["YOLO_IMAGE_EXTENSIONS", "find_data_yaml", "read_data_yaml", "yolo_label_path", "list_split_images",
           "parse_yolo_label_file", "load_yolo", "image_size"]

YOLO_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
UNLABELED_CHOICES = ("negative", "drop")
_TOLERANCE = 1e-6  # normalised coordinates may exceed [0, 1] by this much (float printing)


def find_data_yaml(root: str) -> str:
    """The data.yaml of `root`: the file itself, or ``root/data.yaml`` (else the only ``*.yaml`` in root)."""
    root = os.path.expanduser(os.fspath(root))
    if os.path.isfile(root):
        return root
    path = os.path.join(root, "data.yaml")
    if os.path.isfile(path):
        return path
    found = sorted(f for f in os.listdir(root) if f.endswith((".yaml", ".yml"))) if os.path.isdir(root) else []
    if len(found) == 1:
        return os.path.join(root, found[0])
    raise FileNotFoundError(f"YOLO dataset {root}: no data.yaml there (a YAML file with 'names' and 'train' / 'val' "
                            f"paths; DATA.ROOT is its folder or the file itself)")


def read_data_yaml(path: str) -> Tuple[dict, List[str], str]:
    """(the YAML mapping, class names in id order, the dataset root its paths are relative to)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise AnnotationError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a mapping with 'names' and 'train' / 'val' paths")
    names = data.get("names")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: 'names' keys must be class ids 0..K-1, got {list(names)}") from None
        if ids != list(range(len(ids))):
            raise AnnotationError(f"{path}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise AnnotationError(f"{path}: missing field 'names' (a list of class names, or a mapping id -> name)")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise AnnotationError(f"{path}: 'names' lists a class twice: {names}")
    base = os.path.dirname(os.path.abspath(path))
    root = data.get("path")
    root = base if not root else root if os.path.isabs(str(root)) else os.path.join(base, str(root))
    return data, names, os.path.normpath(root)


def yolo_label_path(image_path: str) -> str:
    """The label file of an image: the last ``images`` path component -> ``labels``, extension -> ``.txt``."""
    parts = os.path.normpath(image_path).split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def list_split_images(data: dict, split: str, root: str, yaml_path: str) -> List[str]:
    """The image paths of data.yaml's `split` entry (folders listed sorted, .txt lists in their order)."""
    if split not in data or data[split] in (None, ""):
        known = [k for k in data if k not in ("names", "path", "nc", "download")]
        raise AnnotationError(f"{yaml_path}: no split {split!r} (its splits: {', '.join(known) or 'none'})")
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    images: List[str] = []
    for entry in entries:
        path = os.path.expanduser(str(entry))
        path = path if os.path.isabs(path) else os.path.join(root, path)
        if os.path.isdir(path):
            for folder, _, files in sorted(os.walk(path)):
                images += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(YOLO_IMAGE_EXTENSIONS)]
        elif os.path.isfile(path) and path.endswith(".txt"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        p = line if os.path.isabs(line) else os.path.normpath(os.path.join(root, line))
                        images.append(p)
        else:
            raise FileNotFoundError(f"{yaml_path}: split {split!r} names {path}, which is neither a folder of images "
                                    f"nor a .txt list of them")
    return images


def _number(token: str, label_path: str, line_no: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise AnnotationError(f"{label_path} line {line_no}: {token!r} is not a number") from None
    if not np.isfinite(value):
        raise AnnotationError(f"{label_path} line {line_no}: {token!r} is not a finite number")
    return value


def parse_yolo_label_file(label_path: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """(class ids int64 [N] in 0..K-1, float64 [N, 4] normalised cx, cy, w, h) of one label file; AnnotationError
    naming the file and line for a malformed line, a class id outside 0..K-1 or a coordinate outside [0, 1]."""
    classes, boxes = [], []
    with open(label_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
                raise AnnotationError(f"{label_path} line {line_no}: expected 'class cx cy w h' (5 values) or a "
                                      f"polygon 'class x1 y1 x2 y2 x3 y3 ...', got {len(tokens)} values")
            cls = _number(tokens[0], label_path, line_no)
            if cls != int(cls) or not 0 <= cls < num_classes:
                raise AnnotationError(f"{label_path} line {line_no}: class id {tokens[0]} is not one of 0..{num_classes - 1} "
                                      f"(data.yaml names {num_classes} classes)")
            values = np.array([_number(t, label_path, line_no) for t in tokens[1:]], np.float64)
            bad = np.flatnonzero((values < -_TOLERANCE) | (values > 1 + _TOLERANCE))
            if bad.size:
                what = ("cx", "cy", "w", "h")[bad[0]] if len(values) == 4 else f"value {bad[0] + 1}"
                raise AnnotationError(f"{label_path} line {line_no}: {what} = {tokens[1 + bad[0]]} is outside [0, 1] "
                                      f"(coordinates are normalised by the image's width and height)")
            if len(values) > 4:  # a polygon: its bounding box
                xs, ys = values[0::2], values[1::2]
                values = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(),
                                   ys.max() - ys.min()])
            classes.append(int(cls))
            boxes.append(values)
    return np.asarray(classes, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image as it is read (upright: EXIF orientations 5..8 swap the sides), from its header."""
    from PIL import Image

    from detection.data.image_io import exif_orientation

    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as exc:  # PIL raises many types for unreadable files
        raise AnnotationError(f"cannot read image {path}: {exc}") from None
    if exif_orientation(path) in (5, 6, 7, 8):
        width, height = height, width
    return int(height), int(width)


def load_yolo(root: str, sets: Union[str, Sequence[str]], class_names: Optional[Sequence[str]] = None,
              unlabeled: str = "negative", check_images: bool = True, skip_bad_images: bool = False,
              name: Optional[str] = None) -> DetectionRecords:
    """Read data.yaml splits `sets` (e.g. ``['train']``) of the YOLO dataset at `root` (its folder or data.yaml).

    class_names: None = data.yaml's names; else the label order (the same names, once each, any order).
    unlabeled: 'negative' keeps images without labels as records without boxes, 'drop' leaves them out.
    check_images / skip_bad_images: as in voc.load_voc. Returns DetectionRecords: records ``{image_id (the image
    path relative to the dataset root, without extension), path, height, width, boxes float32 [N, 4] xyxy, labels
    int64 [N] in 1..K, difficult / iscrowd bool [N] (False)}`` in split order; meta: format, data_yaml, root.
    """
    if unlabeled not in UNLABELED_CHOICES:
        raise ValueError(f"unlabeled must be one of {UNLABELED_CHOICES}, got {unlabeled!r}")
    sets = [sets] if isinstance(sets, str) else list(sets)
    yaml_path = find_data_yaml(root)
    data, names, base = read_data_yaml(yaml_path)
    to_label = np.arange(1, len(names) + 1, dtype=np.int64)
    if class_names:
        class_names = tuple(class_names)
        if sorted(class_names) != sorted(names):
            raise AnnotationError(f"{yaml_path}: its names {names} do not match the class list {list(class_names)} "
                                  f"(same names, once each, any order); set DATA.CLASSES to [] to take data.yaml's")
        to_label = np.array([class_names.index(n) + 1 for n in names], np.int64)
        names = list(class_names)
    stats = ReadStats()
    records: List[dict] = []
    listed: Dict[str, str] = {}
    for split in sets:
        for path in list_split_images(data, split, base, yaml_path):
            key = os.path.normcase(os.path.abspath(path))
            if key in listed:
                raise AnnotationError(f"{yaml_path}: image {path} is listed twice (in split {listed[key]!r} and "
                                      f"{split!r})")
            listed[key] = split
            if check_images:
                reason = check_image_header(path)
                if reason is not None:
                    if not skip_bad_images:
                        raise AnnotationError(f"cannot read image {path}: {reason} (split {split!r} of {yaml_path}; "
                                              f"set DATA.SKIP_BAD_IMAGES to skip it)")
                    logger.warning("skipping image %s: %s", path, reason)
                    stats.skipped_images += 1
                    continue
            label_path = yolo_label_path(path)
            cls, cxcywh = (parse_yolo_label_file(label_path, len(to_label)) if os.path.isfile(label_path)
                           else (np.zeros(0, np.int64), np.zeros((0, 4))))
            if cls.size == 0 and unlabeled == "drop":
                stats.skipped_images += 1
                continue
            height, width = image_size(path)
            scale = np.array([width, height, width, height], np.float64)
            xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1) * scale
            boxes = xyxy.astype(np.float32)
            labels = to_label[cls]
            keep = clip_and_filter_boxes(boxes, height, width, label_path, stats,
                                         labels_hint=lambda i, labels=labels: names[labels[i] - 1])
            image_id = os.path.splitext(os.path.relpath(path, base))[0].replace(os.sep, "/")
            rec = make_record(image_id, path, height, width, boxes[keep], labels[keep])
            n = rec["boxes"].shape[0]
            stats.images += 1
            stats.objects += n
            stats.empty_images += int(n == 0)
            records.append(rec)
    logger.info("%s", stats.summary(name or f"YOLO {'+'.join(sets)}"))
    return DetectionRecords(records, tuple(names), stats, meta=dict(format="yolo", data_yaml=yaml_path, root=base,
                                                                     image_sets=list(sets)))
