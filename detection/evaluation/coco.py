"""COCO box evaluation with pycocotools' COCOeval (iouType "bbox") on the standard results JSON.

Results entries are ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}`` with the
annotation file's original (non-contiguous) category ids and COCO's continuous pixels, so a toolkit box
(x1, y1, x2, y2) is written as [x1, y1, x2 - x1, y2 - y1] and label k as category_ids[k - 1].

The 12 numbers are COCOeval.stats under their usual names (fractions; -1 where pycocotools finds the metric
undefined, e.g. APs without small objects in the ground truth). pycocotools' prints are captured: the summary
table comes back as text. pycocotools is imported when first used.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from detection.evaluation.evaluator import DatasetEvaluator, EvaluationInputError, to_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_METRIC_NAMES", "load_coco_gt", "load_coco_results", "detections_to_coco_results", "validate_coco_results",
    "coco_evaluate", "COCOEvaluator",
]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _read_json(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise EvaluationInputError(f"{path}: {what} not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise EvaluationInputError(f"{path}: malformed JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise EvaluationInputError(f"{path}: not a text JSON file ({e})") from None


def load_coco_gt(ann: str | Mapping | Any):
    """A pycocotools COCO object, silently, from an instances JSON path, its loaded dict, or a COCO object.

    The file must hold "images", "annotations" and "categories" (EvaluationInputError naming it otherwise).
    """
    from pycocotools.coco import COCO

    if isinstance(ann, COCO):
        return ann
    source = ann if isinstance(ann, str) else "annotations"
    dataset = _read_json(ann, "annotation file") if isinstance(ann, str) else copy.deepcopy(dict(ann))
    if not isinstance(dataset, dict) or any(k not in dataset for k in ("images", "annotations", "categories")):
        raise EvaluationInputError(f"{source}: not a COCO instances file (needs images, annotations, categories)")
    for k, a in enumerate(dataset["annotations"]):
        if not isinstance(a, dict) or any(key not in a for key in ("id", "image_id", "category_id", "bbox")):
            raise EvaluationInputError(f"{source}: annotation {k} lacks one of id, image_id, category_id, bbox")
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
    _check_unique_ids(dataset, source)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_unique_ids(dataset: dict, source: str) -> None:
    """EvaluationInputError naming the id and both images when two images, or two annotations, share an id
    (pycocotools' index would keep one of them and score against a wrong ground truth)."""
    from detection.data.records import first_duplicate

    images = [im for im in dataset["images"] if isinstance(im, dict)]
    name = {}
    for im in images:
        try:
            name.setdefault(im.get("id"), im.get("file_name", "?"))
        except TypeError:  # an unhashable id: pycocotools cannot index it either
            raise EvaluationInputError(f"{source}: image id {im.get('id')!r} must be a number or a string") from None
    pair = first_duplicate([im.get("id") for im in images])
    if pair is not None:
        a, b = images[pair[0]], images[pair[1]]
        raise EvaluationInputError(f"{source}: duplicate image id {b.get('id')!r}: {a.get('file_name', '?')} and "
                                   f"{b.get('file_name', '?')}")
    anns = dataset["annotations"]
    pair = first_duplicate([a["id"] for a in anns])
    if pair is not None:
        a, b = anns[pair[0]], anns[pair[1]]
        raise EvaluationInputError(f"{source}: duplicate annotation id {b['id']!r}: on image "
                                   f"{name.get(a['image_id'], a['image_id'])} and on image "
                                   f"{name.get(b['image_id'], b['image_id'])}")


def load_coco_results(path: str) -> list:
    """The results JSON list of a file (EvaluationInputError naming it when missing or malformed)."""
    results = _read_json(path, "results file")
    if not isinstance(results, list):
        raise EvaluationInputError(f"{path}: expected a JSON list of detections, got {type(results).__name__}")
    return results


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_coco_results(results: Sequence, coco_gt, source: str = "results") -> list[dict]:
    """Check results entries against the ground truth and return clean copies (pycocotools mutates its input).

    Every entry needs image_id (an image of coco_gt), category_id (a category of coco_gt), bbox (4 finite
    numbers) and score (a finite number); otherwise EvaluationInputError naming `source` and the entry index.
    """
    if not isinstance(results, (list, tuple)):
        raise EvaluationInputError(f"{source}: expected a list of detections, got {type(results).__name__}")
    image_ids = set(coco_gt.getImgIds())
    category_ids = set(coco_gt.getCatIds())
    clean = []
    for k, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise EvaluationInputError(f"{source}: entry {k} is not an object: {r!r}")
        missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in r]
        if missing:
            raise EvaluationInputError(f"{source}: entry {k} lacks {', '.join(missing)}")
        if r["image_id"] not in image_ids:
            raise EvaluationInputError(f"{source}: entry {k}: unknown image_id {r['image_id']!r}")
        if r["category_id"] not in category_ids:
            raise EvaluationInputError(f"{source}: entry {k}: unknown category_id {r['category_id']!r}")
        bbox = r["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise EvaluationInputError(f"{source}: entry {k}: bbox must be [x, y, w, h] numbers, got {bbox!r}")
        if not _is_number(r["score"]):
            raise EvaluationInputError(f"{source}: entry {k}: score must be a finite number, got {r['score']!r}")
        clean.append(dict(image_id=r["image_id"], category_id=r["category_id"],
                          bbox=[float(v) for v in bbox], score=float(r["score"])))
    return clean


def detections_to_coco_results(detections: Sequence[Mapping], image_ids: Sequence[int],
                               category_ids: Sequence[int]) -> list[dict]:
    """Toolkit detections -> COCO results entries.

    detections[i]: dict(boxes [M, 4] xyxy continuous pixels, scores [M], labels [M] in 1..K) of image_ids[i];
    category_ids[k - 1] is the annotation file's id of label k. bbox = [x1, y1, x2 - x1, y2 - y1].
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection entries for {len(image_ids)} image ids")
    category_ids = [int(c) for c in category_ids]
    results = []
    for det, image_id in zip(detections, image_ids):
        image_id = image_id.item() if hasattr(image_id, "item") else image_id  # numpy/torch scalar -> int
        boxes = to_numpy(det["boxes"], np.float64).reshape(-1, 4)
        scores = to_numpy(det["scores"], np.float64).reshape(-1)
        labels = to_numpy(det["labels"]).reshape(-1).astype(np.int64)
        if labels.size and (labels.min() < 1 or labels.max() > len(category_ids)):
            raise ValueError(f"image {image_id}: labels must be in 1..{len(category_ids)}, "
                             f"got {np.unique(labels).tolist()}")
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        for b, s, l in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            results.append(dict(image_id=image_id, category_id=category_ids[l - 1], bbox=b, score=s))
    return results


def _empty_results(coco_gt):
    """What loadRes would build for an empty list (it indexes anns[0] and fails)."""
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = dict(images=list(coco_gt.dataset["images"]), categories=copy.deepcopy(coco_gt.dataset["categories"]),
                       annotations=[])
    res.createIndex()
    return res


def coco_evaluate(coco_gt, results: Sequence[Mapping] | str, img_ids: Sequence[int] | None = None,
                  source: str | None = None) -> dict:
    """COCOeval (bbox) of `results` (a list of entries or a results JSON path) against `coco_gt` (COCO object,
    instances JSON path or dict).

    img_ids: evaluate these images only (default: every image of the ground truth).
    Returns dict(metrics={AP, AP50, ..., ARl}: COCOeval.stats as floats, summary=COCOeval.summarize()'s text,
    per_class_AP={category name: AP at IoU .50:.95, area all, 100 dets; NaN without ground truth}).
    An empty results list gives COCOeval's numbers for no detections (0 where the ground truth has objects).
    """
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_coco_gt(coco_gt)
    if isinstance(results, str):
        source = source or results
        results = load_coco_results(results)
    results = validate_coco_results(results, coco_gt, source or "results")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if img_ids is not None:
            coco_eval.params.imgIds = sorted(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    logger.debug("pycocotools: %s", log.getvalue())
    metrics = {name: float(v) for name, v in zip(COCO_METRIC_NAMES, coco_eval.stats)}
    precision = coco_eval.eval["precision"]  # [T IoUs, R recalls, K classes, A areas, M max dets]
    per_class = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        name = coco_gt.cats[int(cat_id)].get("name", str(int(cat_id)))
        per_class[name] = float(np.mean(p)) if p.size else float("nan")
    return dict(metrics=metrics, summary=summary.getvalue().rstrip("\n"), per_class_AP=per_class)


class COCOEvaluator(DatasetEvaluator):
    """COCO box AP of the processed images.

    ann: the instances JSON (path, dict or COCO object) of the evaluated split.
    category_ids: the annotation file's category id of each label: a list (label k -> category_ids[k - 1]) or the
        COCO reader's {label: category id} map; defaults to the sorted category ids (the reader's default order).
    output_dir: when set, `evaluate` also writes the results JSON there (coco_instances_results.json).
    Records' image_id must be the annotation file's image id (an int, or its decimal string).

    `evaluate()` -> {"bbox": {"AP": .., ..., "ARl": ..}}; the full `coco_evaluate` result stays in `self.result`.
    """

    RESULTS_FILE = "coco_instances_results.json"

    def __init__(self, ann, category_ids: Sequence[int] | Mapping[int, int] | None = None,
                 output_dir: str | None = None):
        self.coco_gt = load_coco_gt(ann)
        if category_ids is None:
            category_ids = sorted(self.coco_gt.getCatIds())
        elif isinstance(category_ids, Mapping):  # the reader's meta["contiguous_to_coco_id"]: {label: category id}
            category_ids = [category_ids[k] for k in range(1, len(category_ids) + 1)]
        self.category_ids = [int(c) for c in category_ids]
        self.output_dir = output_dir
        self.result: dict | None = None
        self.reset()

    def reset(self) -> None:
        self._results: dict[int, list] = {}

    def _image_id(self, image_id):
        if hasattr(image_id, "item"):  # numpy or torch scalar
            image_id = image_id.item()
        if isinstance(image_id, str) and image_id.strip().isdigit() and int(image_id) in self.coco_gt.imgs:
            return int(image_id)
        if image_id in self.coco_gt.imgs:
            return image_id
        raise EvaluationInputError(f"COCOEvaluator: image_id {image_id!r} is not in the annotation file")

    def process(self, records: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        for record, output in zip(records, outputs, strict=True):
            image_id = self._image_id(record["image_id"])
            self._results[image_id] = detections_to_coco_results([output], [image_id], self.category_ids)

    def evaluate(self) -> dict:
        results = [r for rs in self._results.values() for r in rs]
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, self.RESULTS_FILE), "w") as f:
                json.dump(results, f)
        self.result = coco_evaluate(self.coco_gt, results, img_ids=list(self._results))
        logger.info("COCO bbox evaluation of %d images:\n%s", len(self._results), self.result["summary"])
        return {"bbox": dict(self.result["metrics"])}
