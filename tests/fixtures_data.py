"""Small detection datasets written in the real formats, in code (nothing committed), for tests to reuse.

- :func:`write_voc_dataset`: ``<root>/VOCdevkit/VOC<year>/{JPEGImages/*.jpg, Annotations/*.xml,
  ImageSets/Main/<split>.txt}``; VOC XML with ``<difficult>`` and ``<truncated>``, 1-based inclusive boxes.
- :func:`write_coco_dataset`: ``<root>/coco/{images/*.jpg, annotations.json}`` with non-contiguous category ids,
  crowd boxes and an image without annotations.
- Primitives to write single files (:func:`write_voc_xml`, :func:`draw_image`, :func:`write_jpeg`) and to break
  them (:func:`corrupt_file`, :func:`truncate_file`) for the bad-input tests.

Every object is a filled rectangle of its own colour on a grey background, so its box is the bounding box of
its coloured pixels: in VOC terms pixels ``xmin..xmax`` (1-based, inclusive), continuous ``[xmin-1, xmax]``.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

BACKGROUND = (128, 128, 128)
# distinct, saturated RGB colours far from the grey background
COLOURS = [(230, 25, 25), (25, 200, 25), (25, 25, 230), (230, 230, 25), (230, 25, 230), (25, 230, 230),
           (250, 130, 0), (120, 0, 200)]


def draw_image(height: int, width: int, boxes_xyxy: Sequence[Sequence[float]],
               colours: Optional[Sequence] = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB grey image with filled rectangles covering the continuous integer boxes
    ``[x1, y1, x2, y2]`` (pixel columns x1..x2-1, rows y1..y2-1), colour ``colours[i]`` (default COLOURS)."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    colours = colours or COLOURS
    for i, (x1, y1, x2, y2) in enumerate(boxes_xyxy):
        x1, y1 = max(0, int(x1)), max(0, int(y1))
        x2, y2 = min(width, int(x2)), min(height, int(y2))
        img[y1:y2, x1:x2] = colours[i % len(colours)]
    return img


def write_jpeg(path: str, rgb: np.ndarray, quality: int = 95) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok = cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, path
    return path


def corrupt_file(path: str) -> None:
    """Overwrite with bytes that are no image at all."""
    with open(path, "wb") as f:
        f.write(b"this is not a JPEG file\n" * 4)


def truncate_file(path: str, keep: float = 0.5) -> None:
    """Keep only the first fraction of the file (a broken download)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def write_voc_xml(path: str, filename: str, width: Optional[int], height: Optional[int], objects: Sequence[dict],
                  folder: str = "VOC2007") -> str:
    """A VOC annotation. objects: dicts ``name``, ``bbox`` (xmin, ymin, xmax, ymax, 1-based inclusive; None = no
    <bndbox>), optional ``difficult`` / ``truncated`` (0/1). width/height None leave <size> out."""
    lines = ["<annotation>", f"  <folder>{folder}</folder>", f"  <filename>{filename}</filename>",
             "  <source><database>test</database></source>"]
    if width is not None and height is not None:
        lines += ["  <size>", f"    <width>{width}</width>", f"    <height>{height}</height>", "    <depth>3</depth>",
                  "  </size>"]
    lines.append("  <segmented>0</segmented>")
    for o in objects:
        lines += ["  <object>", f"    <name>{o['name']}</name>", "    <pose>Unspecified</pose>",
                  f"    <truncated>{int(o.get('truncated', 0))}</truncated>",
                  f"    <difficult>{int(o.get('difficult', 0))}</difficult>"]
        if o.get("bbox") is not None:
            x1, y1, x2, y2 = o["bbox"]
            lines += ["    <bndbox>", f"      <xmin>{x1}</xmin>", f"      <ymin>{y1}</ymin>",
                      f"      <xmax>{x2}</xmax>", f"      <ymax>{y2}</ymax>", "    </bndbox>"]
        lines.append("  </object>")
    lines.append("</annotation>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


# The default VOC fixture: (index, height, width, objects with 1-based inclusive boxes).
# 000001 landscape, two objects, one difficult; 000002 portrait; 000003 no objects at all;
# 000004 only a difficult object; 000005 a box touching the right/bottom border (truncated);
# 000006 landscape, three objects.
VOC_IMAGES = [
    ("000001", 60, 80, [dict(name="dog", bbox=(11, 6, 40, 30)), dict(name="person", bbox=(51, 21, 70, 55),
                                                                        difficult=1)]),
    ("000002", 90, 50, [dict(name="cat", bbox=(5, 10, 30, 50)), dict(name="car", bbox=(10, 61, 45, 85))]),
    ("000003", 50, 70, []),
    ("000004", 64, 64, [dict(name="bird", bbox=(20, 20, 40, 40), difficult=1)]),
    ("000005", 48, 72, [dict(name="car", bbox=(41, 21, 72, 48), truncated=1), dict(name="dog", bbox=(1, 1, 20, 15))]),
    ("000006", 70, 100, [dict(name="horse", bbox=(3, 5, 30, 40)), dict(name="person", bbox=(41, 5, 60, 65)),
                         dict(name="cat", bbox=(71, 31, 95, 60))]),
]


def voc_to_continuous(bbox) -> List[float]:
    x1, y1, x2, y2 = bbox
    return [x1 - 1.0, y1 - 1.0, float(x2), float(y2)]


def write_voc_image(voc_dir: str, index: str, height: int, width: int, objects: Sequence[dict],
                    write_image: bool = True) -> None:
    """One image (rectangles drawn at the objects' boxes) and its XML in a VOC folder."""
    if write_image:
        boxes = [voc_to_continuous(o["bbox"]) for o in objects if o.get("bbox") is not None]
        write_jpeg(os.path.join(voc_dir, "JPEGImages", f"{index}.jpg"), draw_image(height, width, boxes))
    write_voc_xml(os.path.join(voc_dir, "Annotations", f"{index}.xml"), f"{index}.jpg", width, height, objects,
                  folder=os.path.basename(voc_dir))


def write_split(voc_dir: str, split: str, indices: Sequence[str]) -> str:
    path = os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in indices))
    return path


def write_voc_dataset(root: str, year: str = "2007", images=None, splits: Optional[Dict[str, Sequence[str]]] = None,
                      prefix: str = "") -> str:
    """Write ``<root>/VOCdevkit/VOC<year>`` (images default VOC_IMAGES; ``prefix`` prepended to the indices);
    splits default ``trainval`` = all, ``test`` = the first two. Returns the VOCdevkit path."""
    images = VOC_IMAGES if images is None else images
    devkit = os.path.join(str(root), "VOCdevkit")
    voc_dir = os.path.join(devkit, f"VOC{year}")
    ids = []
    for index, h, w, objs in images:
        write_voc_image(voc_dir, prefix + index, h, w, objs)
        ids.append(prefix + index)
    splits = splits if splits is not None else {"trainval": ids, "test": ids[:2]}
    for name, idx in splits.items():
        write_split(voc_dir, name, idx)
    return devkit


# COCO fixture: category ids 3, 7, 12 (non-contiguous) -> labels 1, 2, 3 in id order.
COCO_CATEGORIES = [dict(id=12, name="zebra", supercategory="animal"), dict(id=3, name="car", supercategory="vehicle"),
                   dict(id=7, name="person", supercategory="person")]


def coco_fixture_content():
    """(images, annotations) of the default COCO fixture; bbox xywh continuous pixels."""
    images = [dict(id=5, file_name="a.jpg", width=80, height=60), dict(id=9, file_name="b.jpg", width=50, height=90),
              dict(id=11, file_name="c.jpg", width=64, height=48)]  # c.jpg: no annotations
    anns = [
        dict(id=1, image_id=5, category_id=3, bbox=[10.0, 5.0, 30.0, 25.0], area=750.0, iscrowd=0),
        dict(id=2, image_id=5, category_id=12, bbox=[50.0, 20.0, 20.0, 35.0], area=700.0, iscrowd=1),
        dict(id=3, image_id=9, category_id=7, bbox=[4.0, 9.0, 26.0, 41.0], area=1066.0, iscrowd=0),
        dict(id=4, image_id=9, category_id=12, bbox=[9.0, 60.0, 36.0, 25.0], area=900.0, iscrowd=0),
    ]
    return images, anns


def write_coco_dataset(root: str, images=None, annotations=None, categories=None, name: str = "annotations.json"
                       ) -> str:
    """Write ``<root>/coco/images/*.jpg`` and ``<root>/coco/<name>``; returns the JSON path."""
    d_images, d_anns = coco_fixture_content()
    images = d_images if images is None else images
    annotations = d_anns if annotations is None else annotations
    categories = COCO_CATEGORIES if categories is None else categories
    coco_dir = os.path.join(str(root), "coco")
    for img in images:
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                 for a in annotations if a["image_id"] == img["id"]]
        write_jpeg(os.path.join(coco_dir, "images", img["file_name"]), draw_image(img["height"], img["width"], boxes))
    path = os.path.join(coco_dir, name)
    with open(path, "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f, indent=1)
    return path
