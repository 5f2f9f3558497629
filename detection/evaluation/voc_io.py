"""The VOC devkit's files: results files (comp4_det_<split>_<class>.txt) and annotations (Annotations/*.xml,
ImageSets/Main/<split>.txt) of a VOC folder such as VOCdevkit/VOC2007.

Boxes in these files are VOC's 1-based inclusive pixels; the functions that return boxes to the toolkit convert
them to continuous xyxy (x1 = xmin - 1, x2 = xmax), see detection/evaluation/voc_ap.py.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from typing import Mapping, Sequence

import numpy as np

from detection.data.records import first_duplicate
from detection.evaluation.evaluator import EvaluationInputError
from detection.evaluation.voc_ap import PIXEL_OFFSET, as_detections, check_labels, to_inclusive

__all__ = [
    "results_file_name", "write_voc_results", "read_results_file", "read_voc_results", "parse_voc_xml",
    "read_voc_split", "load_voc_ground_truth_inclusive", "load_voc_ground_truth", "voc_year",
    "default_use_07_metric",
]


# ---------------------------------------------------------------------------------------------------------------
# The devkit's results files: comp4_det_<split>_<class>.txt, lines "image_id score xmin ymin xmax ymax"
# ---------------------------------------------------------------------------------------------------------------

def results_file_name(split: str, class_name: str, competition: str = "comp4") -> str:
    """The devkit's results file name, e.g. comp4_det_test_aeroplane.txt."""
    return f"{competition}_det_{split}_{class_name}.txt"


def write_voc_results(dets: Sequence[Mapping], image_ids: Sequence[str], class_names: Sequence[str],
                      out_dir: str, split: str) -> list[str]:
    """Write one results file per class (written even when empty, as the devkit expects every class).

    dets[i]: dict(boxes [M, 4] xyxy continuous, scores [M], labels [M] in 1..K) of image image_ids[i].
    Lines are ``image_id score xmin ymin xmax ymax`` with 1-based inclusive pixels (xmin = x1 + 1, xmax = x2),
    scores as %.6f and boxes as %.1f, in image order then detection order. Returns the paths, in class order.
    """
    if len(dets) != len(image_ids):
        raise ValueError(f"write_voc_results: {len(dets)} detection entries for {len(image_ids)} image ids")
    os.makedirs(out_dir, exist_ok=True)
    K = len(class_names)
    lines: list[list[str]] = [[] for _ in range(K)]
    for i, (det, image_id) in enumerate(zip(dets, image_ids)):
        boxes, scores, labels = as_detections(det, f"dets[{i}]")
        check_labels(labels, K, f"dets[{i}]")
        incl = to_inclusive(boxes)
        for lab, s, b in zip(labels.tolist(), scores.tolist(), incl.tolist()):
            lines[lab - 1].append(f"{image_id} {s:.6f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n")
    paths = []
    for c, name in enumerate(class_names):
        path = os.path.join(out_dir, results_file_name(split, name))
        with open(path, "w") as f:
            f.writelines(lines[c])
        paths.append(path)
    return paths


def read_results_file(path: str, known_ids=None):
    """Parse one results file -> (image ids list[str], scores [n] float64, boxes [n, 4] float64 inclusive pixels).

    Malformed lines (not 6 fields, non-numeric or non-finite values) and image ids outside `known_ids` (when
    given) raise EvaluationInputError naming the file and the 1-based line number. Blank lines are skipped.
    """
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: results file not found")
    ids, values, line_nos = [], [], []
    with open(path, encoding="utf-8") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise EvaluationInputError(f"{path}: not a text results file (byte {e.start} is not UTF-8)") from None
        for line_no, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise EvaluationInputError(
                    f"{path}:{line_no}: expected 'image_id score xmin ymin xmax ymax', got {line.strip()!r}")
            ids.append(parts[0])
            values.append(parts[1:])
            line_nos.append(line_no)
    try:
        arr = np.array(values, dtype=np.float64).reshape(-1, 5)
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    except ValueError:  # find the line at fault
        arr, bad = None, None
        for k, v in enumerate(values):
            try:
                [float(x) for x in v]
            except ValueError:
                raise EvaluationInputError(
                    f"{path}:{line_nos[k]}: non-numeric value in {' '.join([ids[k]] + v)!r}") from None
    if bad is not None and bad.size:
        k = int(bad[0])
        raise EvaluationInputError(f"{path}:{line_nos[k]}: non-finite value in {' '.join([ids[k]] + values[k])!r}")
    if known_ids is not None:
        for k, image_id in enumerate(ids):
            if image_id not in known_ids:
                raise EvaluationInputError(f"{path}:{line_nos[k]}: unknown image id {image_id!r} (not in the split)")
    return ids, arr[:, 0].copy(), arr[:, 1:].copy()


def read_voc_results(results_dir: str, split: str, class_names: Sequence[str],
                     image_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """Read the comp4_det_<split>_<class>.txt files of `results_dir` (every class's file must exist).

    Returns {image_id: dict(boxes [M, 4] float32 xyxy continuous (x1 = xmin - 1, x2 = xmax), scores [M] float32,
    labels [M] int64 in 1..K)}; with `image_ids`, exactly those keys in that order (empty arrays for images with
    no detection) and unknown ids are errors; otherwise the images met, in order of first appearance.
    Detections of an image come class by class, each in file line order.
    """
    known = None if image_ids is None else {str(i): k for k, i in enumerate(image_ids)}
    all_ids, labels, scores, boxes = [], [], [], []
    for c, name in enumerate(class_names, start=1):
        ids, s, b = read_results_file(os.path.join(results_dir, results_file_name(split, name)), known)
        all_ids += ids
        labels.append(np.full(len(ids), c, np.int64))
        scores.append(s)
        boxes.append(b)
    if known is None:
        known = {}
        for i in all_ids:
            known.setdefault(i, len(known))
    order_ids = list(known)
    image_index = np.fromiter((known[i] for i in all_ids), dtype=np.int64, count=len(all_ids))
    labels = np.concatenate(labels + [np.zeros(0, np.int64)])
    scores = np.concatenate(scores + [np.zeros(0)]).astype(np.float32)
    boxes = np.concatenate(boxes + [np.zeros((0, 4))]).reshape(-1, 4)
    boxes[:, :2] -= PIXEL_OFFSET
    boxes = boxes.astype(np.float32)
    order = np.argsort(image_index, kind="stable")  # class by class, line order, within each image
    bounds = np.searchsorted(image_index[order], np.arange(len(order_ids) + 1))
    out = {}
    for k, image_id in enumerate(order_ids):
        sel = order[bounds[k]:bounds[k + 1]]
        out[image_id] = dict(boxes=boxes[sel], scores=scores[sel], labels=labels[sel])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Annotations of a VOC folder (VOCdevkit/VOC2007: Annotations/*.xml, ImageSets/Main/<split>.txt)
# ---------------------------------------------------------------------------------------------------------------

def parse_voc_xml(path: str) -> dict:
    """Parse one VOC annotation file (stdlib only) -> dict(width, height, objects=[dict(name, bbox, difficult)])
    with bbox = [xmin, ymin, xmax, ymax] as float in VOC's 1-based inclusive pixels, as written in the file.

    Not detection.data.voc.parse_voc_xml: the data reader clips boxes to the image, drops degenerate ones and
    rejects unknown class names, while the devkit scores against the raw annotations of any subset of classes.

    A missing <difficult> counts as 0 (the devkit's PASreadrecord); missing coordinates are errors naming the file.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: annotation file not found") from None
    except ET.ParseError as e:
        raise EvaluationInputError(f"{path}: malformed XML: {e}") from None

    def number(node, tag, default=None):
        text = node.findtext(tag) if node is not None else None
        if text is None or not text.strip():
            if default is not None:
                return default
            raise EvaluationInputError(f"{path}: missing <{tag}>")
        try:
            return float(text)
        except ValueError:
            raise EvaluationInputError(f"{path}: <{tag}> is not a number: {text!r}") from None

    size = root.find("size")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise EvaluationInputError(f"{path}: object {k} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise EvaluationInputError(f"{path}: object {k} ({name}) has no <bndbox>")
        bbox = [number(box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        objects.append(dict(name=name, bbox=bbox, difficult=bool(int(number(obj, "difficult", 0.0)))))
    width = int(number(size, "width", -1.0)) if size is not None else -1
    height = int(number(size, "height", -1.0)) if size is not None else -1
    return dict(width=width if width >= 0 else None, height=height if height >= 0 else None, objects=objects)


def read_voc_split(root: str, split: str) -> list[str]:
    """Image ids listed in <root>/ImageSets/Main/<split>.txt (first token of each non-blank line; an id listed
    twice is an EvaluationInputError naming the file and both lines)."""
    if not os.path.isdir(root):
        raise EvaluationInputError(f"{root}: VOC root folder not found")
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: split file not found")
    with open(path) as f:
        numbered = [(n, line.split()[0]) for n, line in enumerate(f, start=1) if line.strip()]
    pair = first_duplicate([image_id for _, image_id in numbered])
    if pair is not None:  # its objects would be counted twice
        (a, image_id), (b, _) = numbered[pair[0]], numbered[pair[1]]
        raise EvaluationInputError(f"{path}: image {image_id} is listed twice (lines {a} and {b})")
    return [image_id for _, image_id in numbered]


def load_voc_ground_truth_inclusive(root: str, split: str, class_names: Sequence[str] | None):
    """Ground truth as the devkit scores it, difficult objects included -> (image ids, boxes [G_i, 4] float64
    inclusive pixels per image, labels [G_i] int64 per image, difficult [G_i] bool per image, class names)."""
    image_ids = read_voc_split(root, split)
    parsed = [parse_voc_xml(os.path.join(root, "Annotations", f"{i}.xml")) for i in image_ids]
    if class_names is None:
        class_names = sorted({o["name"] for p in parsed for o in p["objects"]})
    index = {name: k for k, name in enumerate(class_names, start=1)}
    boxes, labels, difficult = [], [], []
    for p in parsed:
        objs = [o for o in p["objects"] if o["name"] in index]  # objects of other classes are not evaluated
        boxes.append(np.array([o["bbox"] for o in objs], dtype=np.float64).reshape(-1, 4))
        labels.append(np.array([index[o["name"]] for o in objs], dtype=np.int64))
        difficult.append(np.array([o["difficult"] for o in objs], dtype=bool))
    return image_ids, boxes, labels, difficult, list(class_names)


def load_voc_ground_truth(root: str, split: str, class_names: Sequence[str] | None = None):
    """Ground truth of a VOC split, difficult objects included -> (image_ids, ground_truth, class_names).

    ground_truth[i] = dict(boxes [G, 4] float64 xyxy continuous (x1 = xmin - 1, x2 = xmax), labels [G] int64 in
    1..K, difficult [G] bool). class_names defaults to the object names found in the split, sorted; objects of
    other classes are left out.
    """
    image_ids, boxes, labels, difficult, class_names = load_voc_ground_truth_inclusive(root, split, class_names)
    gt = []
    for b, l, d in zip(boxes, labels, difficult):
        b = b.copy()
        b[:, :2] -= PIXEL_OFFSET
        gt.append(dict(boxes=b, labels=l, difficult=d))
    return image_ids, gt, class_names


def voc_year(root: str) -> int | None:
    """The year of a VOC folder from its name (VOCdevkit/VOC2007 -> 2007), None when it has none."""
    m = re.search(r"VOC(\d{4})", os.path.basename(os.path.normpath(root)))
    return int(m.group(1)) if m else None


def default_use_07_metric(root: str | None) -> bool:
    """py-faster-rcnn's default: the 11-point metric for VOC years before 2010 (2007: True), else area AP."""
    year = voc_year(root) if root else None
    return year is not None and year < 2010
