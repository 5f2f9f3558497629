"""PASCAL VOC reader: ``VOCdevkit/VOC20XX/{Annotations/*.xml, ImageSets/Main/<split>.txt, JPEGImages/}`` -> records.

VOC pixels are 1-based and inclusive; they are converted here, once, to continuous xyxy::

    x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax        (so width = xmax - xmin + 1)

and back with :func:`to_voc_pixels` where the devkit's rules are reproduced (evaluation, results files).
Any folder in VOC layout is a custom dataset: pass its path and its own class list.
Nothing is cached: every call parses the XML files again (no stale annotation caches).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from detection.data.records import (
    AnnotationError,
    DetectionRecords,
    ReadStats,
    check_image_header,
    clip_and_filter_boxes,
    first_duplicate,
    make_record,
)

logger = logging.getLogger(__name__)

__all__ = ["VOC_CLASSES", "resolve_voc_set", "parse_voc_xml", "load_voc", "to_voc_pixels", "from_voc_pixels"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def from_voc_pixels(boxes) -> np.ndarray:
    """VOC 1-based inclusive [xmin, ymin, xmax, ymax] -> continuous xyxy float32 [N, 4]."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, :2] -= 1.0
    return b


def to_voc_pixels(boxes) -> np.ndarray:
    """Continuous xyxy -> VOC 1-based inclusive [xmin, ymin, xmax, ymax] (float; the inverse of from_voc_pixels)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, :2] += 1.0
    return b


def _is_voc_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "Annotations"))


def resolve_voc_set(root: str, name: str) -> Tuple[str, str]:
    """(VOC folder, split) for a set name.

    - ``root`` is itself in VOC layout (has Annotations/): ``name`` is the split, e.g. ``'trainval'``.
    - ``root`` is a VOCdevkit: ``name`` is ``'YEAR_SPLIT'``, e.g. ``'2007_trainval'`` -> ``root/VOC2007``, or
      ``'DIR_SPLIT'`` for a custom folder ``root/DIR`` in VOC layout.
    Raises FileNotFoundError naming what was looked for.
    """
    root = os.path.expanduser(os.fspath(root))
    if _is_voc_dir(root):
        return root, name
    if "_" in name:
        head, split = name.split("_", 1)
        for cand in (os.path.join(root, f"VOC{head}"), os.path.join(root, head)):
            if _is_voc_dir(cand):
                return cand, split
        tried = f"{os.path.join(root, 'VOC' + head)} or {os.path.join(root, head)}"
    else:
        tried = f"{root} (no YEAR_ in the set name {name!r})"
    raise FileNotFoundError(f"VOC set {name!r}: no folder in VOC layout (with Annotations/) at {tried}")


def _text(node: ET.Element, field: str, xml_path: str, what: str = "") -> str:
    child = node.find(field)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{xml_path}: missing field <{field}>{what}")
    return child.text.strip()


def _number(node: ET.Element, field: str, xml_path: str, what: str = "") -> float:
    txt = _text(node, field, xml_path, what)
    try:
        return float(txt)
    except ValueError:
        raise AnnotationError(f"{xml_path}: field <{field}>{what} is not a number: {txt!r}") from None


def _class_lookup(class_names: Sequence[str]):
    exact = {c: i + 1 for i, c in enumerate(class_names)}
    lower = {}
    for i, c in enumerate(class_names):
        lower.setdefault(c.lower(), []).append(i + 1)
    lower = {k: v[0] for k, v in lower.items() if len(v) == 1}

    def lookup(name: str) -> Optional[int]:
        return exact.get(name, lower.get(name.lower()))

    return lookup


def parse_voc_xml(xml_path: str, class_names: Sequence[str] = VOC_CLASSES, stats: Optional[ReadStats] = None,
                  _lookup=None) -> dict:
    """Parse one VOC XML file into a record (``path`` is the <filename> field, to be joined by the caller).

    Boxes are converted to continuous xyxy, clipped to the image (counted) and degenerate ones dropped (warned).
    Class names match exactly, else case-insensitively. Raises AnnotationError naming the file and the line and
    column for malformed XML, the field for missing ones (size/width, object/bndbox/xmin...), or the unknown
    class name.
    """
    lookup = _lookup or _class_lookup(class_names)
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        line, col = e.position
        raise AnnotationError(f"{xml_path}: malformed XML at line {line}, column {col}: {e}") from None
    root = tree.getroot()
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{xml_path}: missing field <size>")
    width = _number(size, "width", xml_path, " in <size>")
    height = _number(size, "height", xml_path, " in <size>")
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{xml_path}: invalid <size> {width:g}x{height:g} (width x height)")
    fname = root.findtext("filename")
    fname = fname.strip() if fname and fname.strip() else None

    boxes, labels, difficult, names = [], [], [], []
    for k, obj in enumerate(root.iter("object")):
        what = f" in object #{k}"
        name = _text(obj, "name", xml_path, what)
        label = lookup(name)
        if label is None:
            raise AnnotationError(f"{xml_path}: unknown class {name!r} in object #{k} (known classes: "
                                  f"{', '.join(class_names)})")
        bb = obj.find("bndbox")
        if bb is None:
            raise AnnotationError(f"{xml_path}: missing field <bndbox> in object #{k} ({name})")
        what = f" in <bndbox> of object #{k} ({name})"
        boxes.append([_number(bb, f, xml_path, what) for f in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(label)
        diff = (obj.findtext("difficult") or "0").strip().lower()
        difficult.append(diff not in ("0", "", "false", "0.0"))
        names.append(name)

    b = from_voc_pixels(boxes)
    keep = clip_and_filter_boxes(b, int(height), int(width), xml_path, stats, labels_hint=names)
    return make_record(image_id=None, path=fname, height=int(height), width=int(width), boxes=b[keep],
                       labels=np.asarray(labels, np.int64)[keep] if labels else [],
                       difficult=np.asarray(difficult, bool)[keep] if difficult else [])


def _split_path(voc_dir: str, split: str) -> str:
    return os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt")


def _read_split(voc_dir: str, split: str) -> List[str]:
    """The image ids of a split file, in order; AnnotationError naming the file and both lines when an id is
    listed twice (it would be trained on, and scored, twice)."""
    path = _split_path(voc_dir, split)
    if not os.path.isfile(path):
        avail = sorted(f[:-4] for f in os.listdir(os.path.dirname(path)) if f.endswith(".txt")
                       and "_" not in f) if os.path.isdir(os.path.dirname(path)) else []
        raise FileNotFoundError(f"VOC split file not found: {path}"
                                + (f" (available splits: {', '.join(avail)})" if avail else ""))
    with open(path, encoding="utf-8") as f:
        # lines may carry a second column (per-class files: "000005 -1"); the id is the first token
        numbered = [(n, line.split()[0]) for n, line in enumerate(f, start=1) if line.strip()]
    pair = first_duplicate([index for _, index in numbered])
    if pair is not None:
        (a, index), (b, _) = numbered[pair[0]], numbered[pair[1]]
        raise AnnotationError(f"{path}: image {index} is listed twice (lines {a} and {b}); list every image once")
    return [index for _, index in numbered]


def load_voc(root: str, sets: Union[str, Sequence[str]], class_names: Sequence[str] = VOC_CLASSES,
             check_images: bool = True, skip_bad_images: bool = False, name: Optional[str] = None
             ) -> DetectionRecords:
    """Read VOC-layout sets and join them.

    root: a VOCdevkit folder (sets ``'2007_trainval'``, ``'2012_trainval'``...) or one folder in VOC layout
        (sets are split names, ``'trainval'``); see :func:`resolve_voc_set`.
    class_names: label k in 1..K is ``class_names[k-1]`` (default: the 20 VOC classes).
    check_images: cheap header check of every image at read time (missing, empty, not a JPEG, truncated).
    skip_bad_images: with check_images, leave bad images out with a warning instead of raising.
    Returns DetectionRecords: records ``{image_id (file stem), path, height, width, boxes float32 [N,4] continuous
    xyxy, labels int64 [N] in 1..K, difficult bool [N], iscrowd bool [N] (all False)}``, in split-file order;
    images without objects are kept. Logs (and returns in ``.stats``) a summary line.
    """
    if isinstance(sets, str):
        sets = [sets]
    class_names = tuple(class_names)
    if not class_names:
        raise ValueError("load_voc: class_names is empty (VOC layout has no class list; pass one)")
    lookup = _class_lookup(class_names)
    stats = ReadStats()
    records: List[dict] = []
    voc_dirs = []
    seen = {}  # (VOC folder, image id) -> position in `sets` of the set that listed it
    for position, set_name in enumerate(sets):
        voc_dir, split = resolve_voc_set(root, set_name)
        voc_dirs.append(voc_dir)
        for index in _read_split(voc_dir, split):
            first = seen.setdefault((voc_dir, index), position)
            if first != position:
                raise AnnotationError(f"image {index} of {voc_dir} is in two of the joined sets, {sets[first]} and "
                                      f"{set_name} ({_split_path(voc_dir, split)}); join sets that do not overlap")
            xml_path = os.path.join(voc_dir, "Annotations", f"{index}.xml")
            if not os.path.isfile(xml_path):
                raise AnnotationError(f"{xml_path}: annotation file not found (listed in {split}.txt of {voc_dir})")
            rec = parse_voc_xml(xml_path, class_names, stats, _lookup=lookup)
            # JPEGImages/<index>.jpg is the devkit's rule; fall back to <filename> for other extensions
            img_path = os.path.join(voc_dir, "JPEGImages", f"{index}.jpg")
            if not os.path.exists(img_path) and rec["path"]:
                alt = os.path.join(voc_dir, "JPEGImages", rec["path"])
                if os.path.exists(alt):
                    img_path = alt
            rec["path"] = img_path
            rec["image_id"] = index
            if check_images:
                reason = check_image_header(img_path)
                if reason is not None:
                    if not skip_bad_images:
                        raise AnnotationError(f"cannot read image {img_path}: {reason} (annotation {xml_path}; "
                                              f"set DATA.SKIP_BAD_IMAGES to skip it)")
                    logger.warning("skipping image %s: %s", img_path, reason)
                    stats.skipped_images += 1
                    continue
            n = rec["boxes"].shape[0]
            stats.images += 1
            stats.objects += n
            stats.difficult += int(rec["difficult"].sum())
            stats.empty_images += int(n == 0)
            records.append(rec)
    label = name or f"VOC {'+'.join(sets)}"
    logger.info("%s", stats.summary(label))
    return DetectionRecords(records, class_names, stats, meta=dict(voc_dirs=voc_dirs, image_sets=list(sets),
                                                                     format="voc"))
