"""Write detection records in the VOC, COCO or YOLO layout (tools/convert_dataset.py), and COCO dicts in memory.

Each writer takes ``{split name: DetectionRecords}`` read by any reader (voc.load_voc, coco.load_coco,
yolo.load_yolo) and an output folder; images are copied (or symlinked with ``link=True``) under their file names,
which must be unique across the splits written (one image in two splits is one file). Boxes are the records' continuous xyxy pixels:

- VOC: ``Annotations/<stem>.xml`` (1-based inclusive pixels: xmin = x1 + 1, xmax = x2; whole numbers are written as
  integers), ``ImageSets/Main/<split>.txt``, ``JPEGImages/``; crowd boxes are written as difficult (VOC has no crowd);
- COCO: ``annotations/instances_<split>.json`` (category ids 1..K in class order, bbox = x, y, w, h, area = w * h,
  iscrowd kept), images in ``<split>/``; VOC's difficult flag has no COCO field and is lost (counted);
- YOLO: ``images/<split>/``, ``labels/<split>/<stem>.txt`` and ``data.yaml``; the normalised values are written
  with Python's shortest round-trip repr, so reading them back gives the same float32 boxes; difficult and crowd
  boxes are left out (YOLO has no flag for them; Ultralytics' own VOC conversion skips difficult objects).
The counts of what a format could not carry are returned, for the tool to print.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import xml.etree.ElementTree as ET
from typing import Dict, Mapping, Sequence

import numpy as np

from detection.data.records import DatasetError, DetectionRecords

__all__ = ["records_to_coco", "write_voc", "write_coco", "write_yolo", "WRITERS"]


def records_to_coco(records: Sequence[dict], class_names: Sequence[str], file_names: Sequence[str] = None) -> dict:
    """A COCO instances dict of `records`: image ids are the records' image_id, category ids 1..K, bbox xywh,
    area w * h; difficult boxes are marked iscrowd (so that COCO evaluation ignores them, as VOC's does)."""
    images, annotations = [], []
    for i, rec in enumerate(records):
        images.append(dict(id=rec["image_id"], file_name=file_names[i] if file_names else rec["path"],
                           height=int(rec["height"]), width=int(rec["width"])))
        b = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        crowd = np.asarray(rec["iscrowd"], bool) | np.asarray(rec.get("difficult", np.zeros(len(b), bool)), bool)
        for box, label, c in zip(b.tolist(), np.asarray(rec["labels"]).tolist(), crowd.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(dict(id=len(annotations) + 1, image_id=rec["image_id"], category_id=int(label),
                                    bbox=[box[0], box[1], w, h], area=w * h, iscrowd=int(c)))
    categories = [dict(id=k + 1, name=str(n)) for k, n in enumerate(class_names)]
    return dict(images=images, annotations=annotations, categories=categories)


def _progress(records, split: str):
    """A progress bar over a split's records (on a terminal, for more than a few hundred images)."""
    import sys

    from tqdm import tqdm

    return tqdm(records, desc=f"writing {split}", unit="image", leave=False,
                disable=len(records) < 200 or not sys.stderr.isatty())


def _place_image(src: str, dst: str, link: bool) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        os.remove(dst)
    if link:
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copy2(src, dst)


def _file_names(splits: Mapping[str, DetectionRecords]) -> Dict[str, str]:
    """{record path: output file name}; DatasetError when two different images share a name."""
    names: Dict[str, str] = {}
    owner: Dict[str, str] = {}
    for recs in splits.values():
        for rec in recs.records:
            name = os.path.basename(rec["path"])
            if name in owner and owner[name] != rec["path"] and not filecmp.cmp(owner[name], rec["path"], shallow=False):
                raise DatasetError(f"two images are both named {name}: {owner[name]} and {rec['path']} (the output "
                                   f"layout keeps one folder per split and one name per image)")
            owner[name] = rec["path"]
            names[rec["path"]] = name
    return names


def _class_names(splits: Mapping[str, DetectionRecords]) -> tuple:
    lists = {tuple(r.class_names) for r in splits.values()}
    if len(lists) != 1:
        raise DatasetError(f"the splits have different class lists: {sorted(lists)}")
    return lists.pop()


def _voc_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_voc(splits: Mapping[str, DetectionRecords], out: str, link: bool = False) -> Dict[str, int]:
    """VOC layout under `out` (module docstring). Returns {'crowd_as_difficult': n}."""
    names, classes = _file_names(splits), _class_names(splits)
    lost = {"crowd_as_difficult": 0}
    for split, recs in splits.items():
        stems = []
        for rec in _progress(recs.records, split):
            fname = names[rec["path"]]
            stem = os.path.splitext(fname)[0]
            stems.append(stem)
            _place_image(rec["path"], os.path.join(out, "JPEGImages", fname), link)
            root = ET.Element("annotation")
            ET.SubElement(root, "filename").text = fname
            size = ET.SubElement(root, "size")
            for key, v in (("width", rec["width"]), ("height", rec["height"]), ("depth", 3)):
                ET.SubElement(size, key).text = str(int(v))
            flags = np.asarray(rec["difficult"], bool) | np.asarray(rec["iscrowd"], bool)
            lost["crowd_as_difficult"] += int(np.asarray(rec["iscrowd"], bool).sum())
            for box, label, diff in zip(np.asarray(rec["boxes"], np.float64), rec["labels"], flags):
                obj = ET.SubElement(root, "object")
                ET.SubElement(obj, "name").text = classes[int(label) - 1]
                ET.SubElement(obj, "difficult").text = str(int(diff))
                bb = ET.SubElement(obj, "bndbox")
                for key, v in zip(("xmin", "ymin", "xmax", "ymax"), (box[0] + 1, box[1] + 1, box[2], box[3])):
                    ET.SubElement(bb, key).text = _voc_number(float(np.float32(v)))
            ET.indent(root, space="  ")
            os.makedirs(os.path.join(out, "Annotations"), exist_ok=True)
            ET.ElementTree(root).write(os.path.join(out, "Annotations", f"{stem}.xml"), encoding="utf-8")
        os.makedirs(os.path.join(out, "ImageSets", "Main"), exist_ok=True)
        with open(os.path.join(out, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("".join(f"{s}\n" for s in stems))
    return lost


def write_coco(splits: Mapping[str, DetectionRecords], out: str, link: bool = False) -> Dict[str, int]:
    """COCO layout under `out` (module docstring). Returns {'difficult_lost': n}."""
    names, classes = _file_names(splits), _class_names(splits)
    lost = {"difficult_lost": 0}
    for split, recs in splits.items():
        files = [names[r["path"]] for r in recs.records]
        records = []
        for k, rec in enumerate(_progress(recs.records, split)):
            _place_image(rec["path"], os.path.join(out, split, files[k]), link)
            lost["difficult_lost"] += int(np.asarray(rec["difficult"], bool).sum())
            records.append({**rec, "image_id": k + 1, "difficult": np.zeros(len(rec["labels"]), bool)})
        coco = records_to_coco(records, classes, files)
        os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
        with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(coco, f)
    return lost


def write_yolo(splits: Mapping[str, DetectionRecords], out: str, link: bool = False) -> Dict[str, int]:
    """YOLO layout under `out` (module docstring). Returns {'difficult_dropped': n, 'crowd_dropped': n}."""
    import yaml

    names, classes = _file_names(splits), _class_names(splits)
    lost = {"difficult_dropped": 0, "crowd_dropped": 0}
    for split, recs in splits.items():
        for rec in _progress(recs.records, split):
            fname = names[rec["path"]]
            _place_image(rec["path"], os.path.join(out, "images", split, fname), link)
            diff, crowd = np.asarray(rec["difficult"], bool), np.asarray(rec["iscrowd"], bool)
            lost["difficult_dropped"] += int((diff & ~crowd).sum())
            lost["crowd_dropped"] += int(crowd.sum())
            keep = ~(diff | crowd)
            b = np.asarray(rec["boxes"], np.float64)[keep]
            w, h = float(rec["width"]), float(rec["height"])
            rows = np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w,
                             (b[:, 3] - b[:, 1]) / h], 1) if len(b) else np.zeros((0, 4))
            labels = np.asarray(rec["labels"])[keep] - 1
            lines = [f"{int(c)} " + " ".join(repr(float(v)) for v in row) for c, row in zip(labels, rows)]
            label_path = os.path.join(out, "labels", split, os.path.splitext(fname)[0] + ".txt")
            os.makedirs(os.path.dirname(label_path), exist_ok=True)
            with open(label_path, "w") as f:
                f.write("".join(line + "\n" for line in lines))
    data = {"path": ".", **{split: f"images/{split}" for split in splits}, "names": list(classes)}
    with open(os.path.join(out, "data.yaml"), "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return lost


WRITERS = {"voc": write_voc, "coco": write_coco, "yolo": write_yolo}
