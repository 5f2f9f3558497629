"""COCO-format reader (pycocotools): a JSON file + an image folder -> records. Any COCO-format JSON is a dataset.

- Category ids (often non-contiguous: COCO's 1..90 with gaps) map to labels 1..K sorted by id; the maps
  ``contiguous_to_coco_id`` / ``coco_id_to_contiguous`` are in ``DetectionRecords.meta`` for results files.
- COCO ``bbox`` is ``[x, y, w, h]`` in continuous pixels -> xyxy ``[x, y, x + w, y + h]``.
- ``iscrowd`` boxes are kept in the record, flagged; training leaves them out (see records.trainable_mask).
- Images without annotations are kept unless ``keep_empty=False``.
Nothing is cached: the JSON is parsed on every call.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from typing import List, Optional, Sequence

import numpy as np

from detection.data.categories import is_placeholder
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

__all__ = ["load_coco", "read_coco_json", "coco_category_maps"]


def read_coco_json(path: str) -> dict:
    """json.load with errors naming the file and the line/column; checks the top-level fields.

    Requires ``images`` and ``categories`` (``annotations`` may be missing, e.g. test-dev image lists).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not a JSON text file (byte {e.start} is not UTF-8)") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a folder, expected a COCO annotation JSON file") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    for field in ("images", "categories"):
        if not isinstance(data.get(field), list):
            raise AnnotationError(f"{path}: missing field '{field}' (a list)")
    data.setdefault("annotations", [])
    return data


def coco_category_maps(categories: Sequence[dict], json_path: str = "<json>",
                       class_names: Optional[Sequence[str]] = None):
    """(class_names, coco_id_to_contiguous, contiguous_to_coco_id): labels 1..K in increasing category id, or,
    when ``class_names`` is given, in that order (it must name every category exactly once; 'N/A' placeholder
    entries, as in torchvision's COCO label list, are labels no category maps to)."""
    for i, c in enumerate(categories):
        for field in ("id", "name"):
            if field not in c:
                raise AnnotationError(f"{json_path}: missing field '{field}' in categories[{i}]")
        if not _is_number(c["id"]):
            raise AnnotationError(f"{json_path}: categories[{i}] id must be a number, got {c['id']!r}")
    cats = sorted(categories, key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in cats]
    if len(set(ids)) != len(ids):
        raise AnnotationError(f"{json_path}: duplicate category ids in 'categories'")
    names = [str(c["name"]) for c in cats]
    if class_names:
        class_names = tuple(class_names)
        real = [n for n in class_names if not is_placeholder(n)]
        if len(set(names)) != len(names) or sorted(names) != sorted(real):
            raise AnnotationError(
                f"{json_path}: the categories {names} do not match the class list {list(class_names)} (same names, "
                f"once each, any order); set DATA.CLASSES to [] to take the classes from the JSON")
        order = {n: k + 1 for k, n in enumerate(class_names) if not is_placeholder(n)}
        to_contig = {int(c["id"]): order[str(c["name"])] for c in cats}
        names = list(class_names)
    else:
        to_contig = {cid: k + 1 for k, cid in enumerate(ids)}
    to_coco = {k: cid for cid, k in sorted(to_contig.items(), key=lambda kv: kv[1])}
    return tuple(names), to_contig, to_coco


def _is_number(value) -> bool:
    """A finite JSON number (not a string, bool, null or list)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_unique_ids(data: dict, json_path: str) -> None:
    """AnnotationError naming the id and both images when two images share an id, or two annotations do
    (pycocotools would index one of them under the other's id and silently merge or drop it)."""
    images = data["images"]
    for i, img in enumerate(images):
        if isinstance(img["id"], bool) or not isinstance(img["id"], (int, float, str)):
            raise AnnotationError(f"{json_path}: images[{i}] ({img['file_name']}) id must be a number or a string, "
                                  f"got {img['id']!r}")
    pair = first_duplicate([img["id"] for img in images])
    if pair is not None:
        i, j = pair
        raise AnnotationError(f"{json_path}: duplicate image id {images[j]['id']!r}: images[{i}] "
                              f"({images[i]['file_name']}) and images[{j}] ({images[j]['file_name']}); every image "
                              f"needs its own id")
    anns = [a for a in data["annotations"] if isinstance(a, dict) and "id" in a]
    pair = first_duplicate([a["id"] for a in anns])
    if pair is not None:
        files = {img["id"]: img["file_name"] for img in images}

        def where(ann):
            name = files.get(ann.get("image_id"))
            return f"image {name}" if name is not None else f"unknown image id {ann.get('image_id')!r}"

        i, j = pair
        a, b = anns[i], anns[j]
        raise AnnotationError(f"{json_path}: duplicate annotation id {b['id']!r}: on {where(a)} and on {where(b)}; "
                              f"every annotation needs its own id")


def _image_dir_for(json_path: str, image_root: Optional[str]) -> str:
    if image_root:
        return image_root
    return os.path.dirname(os.path.abspath(json_path))


def load_coco(json_path: str, image_root: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
              keep_empty: bool = True, check_images: bool = True, skip_bad_images: bool = False,
              name: Optional[str] = None) -> DetectionRecords:
    """Read a COCO-format JSON into records.

    json_path: the annotation file. image_root: the folder ``file_name`` is relative to (default: the JSON's
        folder). class_names: None = the categories' names in id order; else the label order (same names).
        keep_empty: keep images without (any) annotations. check_images / skip_bad_images: as in
        voc.load_voc (a cheap header check at read time; bad images raise or are skipped with a warning).
    Returns DetectionRecords: records ``{image_id (= coco_id, int), coco_id, path, height, width, boxes float32
    [N,4] xyxy, labels int64 [N] in 1..K, difficult bool [N] (False), iscrowd bool [N]}`` in image-id order;
    ``class_names`` in category-id order; ``meta``: ``coco_id_to_contiguous``, ``contiguous_to_coco_id``,
    ``annotation_file``. Raises AnnotationError naming the file (line/column for malformed JSON; the field and
    the image or annotation id for missing fields; the id for unknown category ids).
    """
    from pycocotools.coco import COCO  # optional dependency: imported where used

    data = read_coco_json(json_path)
    class_names, to_contig, to_coco = coco_category_maps(data["categories"], json_path, class_names)
    for i, img in enumerate(data["images"]):
        for field in ("id", "file_name", "width", "height"):
            if field not in img:
                raise AnnotationError(f"{json_path}: missing field '{field}' in images[{i}]"
                                      + (f" (id {img['id']})" if "id" in img else ""))
        for field in ("width", "height"):
            if not _is_number(img[field]):
                raise AnnotationError(f"{json_path}: images[{i}] (id {img['id']}) {field} must be a number, got "
                                      f"{img[field]!r}")
    _check_unique_ids(data, json_path)
    for i, ann in enumerate(data["annotations"]):
        for field in ("image_id", "category_id", "bbox"):
            if field not in ann:
                raise AnnotationError(f"{json_path}: missing field '{field}' in annotations[{i}]"
                                      + (f" (id {ann['id']})" if "id" in ann else ""))
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise AnnotationError(f"{json_path}: annotations[{i}]" + (f" (id {ann['id']})" if "id" in ann else "")
                                  + f" bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if not _is_number(ann["category_id"]) or int(ann["category_id"]) not in to_contig:
            raise AnnotationError(f"{json_path}: unknown category id {ann['category_id']} in annotations[{i}] "
                                  f"(known ids: {sorted(to_contig)})")
    free_id = max((a["id"] for a in data["annotations"] if _is_number(a.get("id"))), default=0)
    for ann in data["annotations"]:
        if "id" not in ann:  # pycocotools indexes annotations by id: a fresh one, unused by the file
            free_id = int(free_id) + 1
            ann["id"] = free_id

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    known_images = set(coco.imgs)
    for ann in data["annotations"]:
        if ann["image_id"] not in known_images:
            raise AnnotationError(f"{json_path}: annotation id {ann['id']} refers to unknown image id "
                                  f"{ann['image_id']}")

    image_dir = _image_dir_for(json_path, image_root)
    stats = ReadStats()
    records: List[dict] = []
    for img_id in sorted(coco.imgs):
        img = coco.imgs[img_id]
        anns = coco.imgToAnns.get(img_id, [])
        width, height = int(img["width"]), int(img["height"])
        if width <= 0 or height <= 0:
            raise AnnotationError(f"{json_path}: image id {img_id} has an invalid size {width}x{height}")
        path = os.path.join(image_dir, img["file_name"])
        if anns:
            xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            labels = np.asarray([to_contig[int(a["category_id"])] for a in anns], dtype=np.int64)
            crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
            def hint(i, anns=anns, labels=labels):
                return f"annotation id {anns[i]['id']}, {class_names[labels[i] - 1]}"

            keep = clip_and_filter_boxes(boxes, height, width, f"{json_path} (image {img['file_name']})", stats,
                                         labels_hint=hint)
            boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
        else:
            boxes, labels, crowd = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), bool)
        if boxes.shape[0] == 0 and not keep_empty:
            stats.skipped_images += 1
            continue
        if check_images:
            reason = check_image_header(path)
            if reason is not None:
                if not skip_bad_images:
                    raise AnnotationError(f"cannot read image {path}: {reason} (image id {img_id} in {json_path}; "
                                          f"set DATA.SKIP_BAD_IMAGES to skip it)")
                logger.warning("skipping image %s: %s", path, reason)
                stats.skipped_images += 1
                continue
        rec = make_record(image_id=img_id, path=path, height=height, width=width, boxes=boxes, labels=labels,
                          iscrowd=crowd, coco_id=img_id)
        n = boxes.shape[0]
        stats.images += 1
        stats.objects += n
        stats.crowd += int(crowd.sum())
        stats.empty_images += int(n == 0)
        records.append(rec)
    logger.info("%s", stats.summary(name or f"COCO {os.path.basename(json_path)}"))
    meta = dict(format="coco", annotation_file=os.path.abspath(json_path), image_root=image_dir,
                coco_id_to_contiguous=to_contig, contiguous_to_coco_id=to_coco)
    return DetectionRecords(records, class_names, stats, meta)
