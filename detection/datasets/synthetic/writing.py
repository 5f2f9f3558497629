"""Writing synthetic datasets: VOC layout + COCO JSON (detection) or an image-folder layout (classification).

Writing is atomic: everything goes to ``<out>.tmp-<pid>`` and is renamed to ``<out>`` at the end, so an
interrupted run never leaves a ``<out>`` that looks complete. A ``<out>`` with a manifest of the same parameters
(and the expected number of images) is kept as is ("exists"); one with a manifest of other parameters is replaced;
a directory without our manifest is never touched unless ``force=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from detection.datasets.synthetic.drawing import SyntheticObject, render_classification_image, render_detection_image
from detection.datasets.synthetic.params import (
    COCO_IMAGE_ROOT,
    GENERATOR_NAME,
    JPEG_QUALITY,
    MANIFEST,
    SYNTHETIC_VERSION,
    ClassificationParams,
    DetectionParams,
)

__all__ = ["detection_image_ids", "generate_detection_dataset", "generate_classification_dataset", "read_manifest"]


def _write_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"cannot encode {path} as JPEG")
    path.write_bytes(buf.tobytes())


def _voc_xml(stem: str, width: int, height: int, objects: Sequence[SyntheticObject]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "detection synthetic"
    ET.SubElement(source, "annotation").text = GENERATOR_NAME
    ET.SubElement(source, "image").text = "synthetic"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = o.name
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(o.truncated))
        ET.SubElement(el, "difficult").text = str(int(o.difficult))
        bb = ET.SubElement(el, "bndbox")
        for key, v in zip(("xmin", "ymin", "xmax", "ymax"), o.voc_box()):
            ET.SubElement(bb, key).text = str(v)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _segmentation(mask: np.ndarray, box: list) -> list:
    """COCO polygons of a visible mask (outer contours); the box polygon when a contour is degenerate."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            polys.append([float(v) + 0.5 for v in c.reshape(-1)])  # pixel centres
    if not polys:
        x, y, bw, bh = box
        polys = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    return [[round(v, 1) for v in p] for p in polys]


def detection_image_ids(params: DetectionParams) -> dict:
    """{split: [image ids]}: train first, then val, then test; trainval = train + val."""
    n1, n2 = params.num_train, params.num_train + params.num_val
    ids = {"train": list(range(1, n1 + 1)), "val": list(range(n1 + 1, n2 + 1)),
           "test": list(range(n2 + 1, n2 + params.num_test + 1))}
    ids["trainval"] = ids["train"] + ids["val"]
    return ids


def _coco_json(params: DetectionParams, ids: Sequence[int], samples: dict) -> dict:
    cat_ids = params.category_ids
    images, anns = [], []
    for image_id in ids:
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": params.width,
                       "height": params.height})
        for o in samples[image_id]:
            box = o.coco_box()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_ids[o.name],
                         "bbox": [float(v) for v in box], "area": float(o.area), "iscrowd": 0,
                         "segmentation": _segmentation(o.mask, box)})
    return {
        "info": {"description": "detection synthetic shapes", "version": str(SYNTHETIC_VERSION),
                 "image_root": COCO_IMAGE_ROOT},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": cat_ids[c], "name": c, "supercategory": "shape"} for c in params.classes],
    }


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_manifest(out) -> Optional[dict]:
    """The manifest of a complete dataset at ``out``, or None."""
    try:
        with open(Path(out) / MANIFEST) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("generator") == GENERATOR_NAME else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(out: Path) -> None:
    """Remove ``<out>.tmp-<pid>`` folders of runs that died (their process is gone)."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f"{out.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _existing_state(out: Path, manifest_core: dict, count_images: Callable[[Path], int]) -> str:
    """'missing', 'same' (complete, same parameters), 'other' (ours, other parameters or damaged), 'foreign'."""
    if not out.exists():
        return "missing"
    m = read_manifest(out)
    if m is None:
        return "foreign"
    same = all(m.get(k) == v for k, v in manifest_core.items())
    if same and count_images(out) == m.get("num_images"):
        return "same"
    return "other"


def _generate(out, manifest_core: dict, write: Callable[[Path], dict], count_images: Callable[[Path], int],
              force: bool, log: Callable[[str], None]) -> Path:
    out = Path(out)
    state = _existing_state(out, manifest_core, count_images)
    if state == "same":
        log(f"{out} exists (complete, same parameters): nothing to do")
        return out
    if state == "foreign" and not force:
        raise FileExistsError(f"{out} exists and is not a synthetic dataset of this generator (no {MANIFEST}); "
                              f"remove it or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.time()
        extra = write(tmp)
        manifest = dict(manifest_core)
        manifest.update(extra)
        _write_json(tmp / MANIFEST, manifest)  # last: a folder with a manifest is complete
        if out.exists():
            if _existing_state(out, manifest_core, count_images) == "same":  # a concurrent run finished first
                shutil.rmtree(tmp, ignore_errors=True)
                log(f"{out} exists (complete, same parameters): nothing to do")
                return out
            old = out.parent / f"{out.name}.old-{os.getpid()}"
            log(f"replacing {out} ({'not ours' if state == 'foreign' else 'other parameters or incomplete'})")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        log(f"wrote {out} in {time.time() - t0:.1f} s: {extra.get('summary', '')}")
        return out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _count_jpegs(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jpg")) if folder.is_dir() else 0


_DET_README = """\
Synthetic shapes detection dataset, written by {generator} (version {version}).
Regenerate: python tools/make_synthetic_dataset.py --out <this folder> (parameters in manifest.json)

VOC layout:  VOC2007/JPEGImages/*.jpg, VOC2007/Annotations/*.xml, VOC2007/ImageSets/Main/<split>.txt
             boxes are 1-based inclusive integer pixels; toolkit xyxy = [xmin - 1, ymin - 1, xmax, ymax]
COCO JSON:   annotations/instances_<split>.json, image root = {image_root} (file_name = 000001.jpg)
             bbox = [x, y, w, h] continuous pixels; category ids are non-contiguous: {category_ids}
Classes (labels 1..K in this order): {classes}
Splits: {splits}
"""

_CLS_README = """\
Synthetic shapes classification dataset (image-folder layout), written by {generator} (version {version}).
Regenerate: python tools/make_synthetic_dataset.py --mode classification --out <this folder>

<split>/<class>/*.jpg; class k images are dominated by shapes of type classes[k].
Classes (labels 0..K-1 in this order): {classes}
Images per class: {splits}
"""


def generate_detection_dataset(out, params: Optional[DetectionParams] = None, force: bool = False,
                               log: Callable[[str], None] = print, **overrides) -> Path:
    """Write (or keep, if complete with the same parameters) a synthetic VOC + COCO detection dataset at ``out``.

    ``params`` or keyword overrides of ``DetectionParams`` fields. Returns ``Path(out)``.
    """
    params = dataclasses.replace(params or DetectionParams(), **overrides)
    core = {"generator": GENERATOR_NAME, "version": SYNTHETIC_VERSION, "mode": "detection",
            "params": params.to_json()}
    ids = detection_image_ids(params)

    def write(tmp: Path) -> dict:
        voc = tmp / "VOC2007"
        for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (voc / d).mkdir(parents=True)
        (tmp / "annotations").mkdir()
        samples = {}
        stats = {"objects": 0, "truncated": 0, "difficult": 0}
        for image_id in range(1, params.num_train + params.num_val + params.num_test + 1):
            s = render_detection_image(params, image_id)
            stem = f"{image_id:06d}"
            _write_jpeg(voc / "JPEGImages" / f"{stem}.jpg", s.image)
            (voc / "Annotations" / f"{stem}.xml").write_bytes(_voc_xml(stem, params.width, params.height,
                                                                        s.objects))
            samples[image_id] = s.objects
            stats["objects"] += len(s.objects)
            stats["truncated"] += sum(o.truncated for o in s.objects)
            stats["difficult"] += sum(o.difficult for o in s.objects)
        splits = ["train", "val", "trainval", "test"] if params.num_val else ["train", "trainval", "test"]
        coco_splits = ["train", "val", "trainval", "test"] if params.num_val else ["trainval", "test"]
        for split in splits:
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(
                "".join(f"{i:06d}\n" for i in ids[split]))
        for split in coco_splits:
            _write_json(tmp / "annotations" / f"instances_{split}.json", _coco_json(params, ids[split], samples))
        split_counts = {k: len(ids[k]) for k in splits}
        (tmp / "README.txt").write_text(_DET_README.format(
            generator=GENERATOR_NAME, version=SYNTHETIC_VERSION, image_root=COCO_IMAGE_ROOT,
            category_ids=params.category_ids, classes=list(params.classes), splits=split_counts))
        n = len(samples)
        return {"num_images": n, "splits": split_counts, "classes": list(params.classes),
                "category_ids": params.category_ids, "coco_image_root": COCO_IMAGE_ROOT,
                "voc_root": "VOC2007", "coco_annotations": {k: f"annotations/instances_{k}.json" for k in coco_splits},
                "num_objects": stats["objects"], "num_truncated": stats["truncated"],
                "num_difficult": stats["difficult"],
                "summary": f"{n} images, {stats['objects']} objects ({stats['truncated']} truncated, "
                           f"{stats['difficult']} difficult), classes {list(params.classes)}"}

    return _generate(out, core, write, lambda p: _count_jpegs(p / "VOC2007" / "JPEGImages"), force, log)


def generate_classification_dataset(out, params: Optional[ClassificationParams] = None, force: bool = False,
                                    log: Callable[[str], None] = print, **overrides) -> Path:
    """Write (or keep) a synthetic image-folder classification dataset ``<out>/{train,val}/<class>/*.jpg``."""
    params = dataclasses.replace(params or ClassificationParams(), **overrides)
    core = {"generator": GENERATOR_NAME, "version": SYNTHETIC_VERSION, "mode": "classification",
            "params": params.to_json()}

    def write(tmp: Path) -> dict:
        counts = {"train": params.num_train, "val": params.num_val}
        n = 0
        for split, count in counts.items():
            if count == 0:
                continue
            for k, cls in enumerate(params.classes):
                d = tmp / split / cls
                d.mkdir(parents=True)
                for i in range(count):
                    _write_jpeg(d / f"{cls}_{i:05d}.jpg", render_classification_image(params, split, k, i).image)
                    n += 1
        (tmp / "README.txt").write_text(_CLS_README.format(
            generator=GENERATOR_NAME, version=SYNTHETIC_VERSION, classes=list(params.classes), splits=counts))
        return {"num_images": n, "splits": counts, "classes": list(params.classes),
                "summary": f"{n} images, classes {list(params.classes)}, per class {counts}"}

    return _generate(out, core, write, _count_jpegs, force, log)
