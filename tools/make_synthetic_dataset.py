#!/usr/bin/env python
r"""Write a synthetic shapes dataset (the quick start trains on it; nothing is downloaded).

Detection (VOC layout + COCO JSON, see detection/datasets/synthetic/__init__.py for the exact layout):
    python tools/make_synthetic_dataset.py --out datasets/synthetic
    python tools/make_synthetic_dataset.py --out datasets/synthetic --preview /tmp/synthetic_preview.png
    python tools/make_synthetic_dataset.py --out datasets/shapes5 --size 640x480 --num-val 40 \
        --classes circle,square,triangle,star,cross --min-size 24 --max-size 240
Classification (image folders <out>/{train,val}/<class>/*.jpg; counts are per class):
    python tools/make_synthetic_dataset.py --mode classification --out datasets/synthetic_cls

A complete dataset with the same parameters is left alone ("exists"); the run is atomic (<out>.tmp-<pid>, then
a rename), so an interrupted run never leaves a half dataset behind.
"""

from __future__ import annotations

import argparse
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

from detection.datasets import synthetic  # noqa: E402


def _size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 320x240, got {text!r}") from None
    return w, h


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", default=None,
                   help="output folder (default datasets/synthetic, or datasets/synthetic_cls in classification mode)")
    p.add_argument("--mode", choices=("detection", "classification"), default="detection")
    p.add_argument("--num-train", type=int, default=None,
                   help="training images (default 120; classification: per class, default 100)")
    p.add_argument("--num-val", type=int, default=None,
                   help="validation images (default 0 for detection; classification: per class, default 30)")
    p.add_argument("--num-test", type=int, default=None, help="test images (detection only, default 40)")
    p.add_argument("--size", type=_size, default=None,
                   help="image WIDTHxHEIGHT (default 320x240; classification 128x128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None,
                   help=f"comma-separated shapes from {','.join(synthetic.SHAPES)} (default "
                        f"{','.join(synthetic.DEFAULT_DETECTION_CLASSES)}; classification "
                        f"{','.join(synthetic.DEFAULT_CLASSIFICATION_CLASSES)})")
    p.add_argument("--min-size", type=int, default=20, help="smallest object extent in pixels (detection)")
    p.add_argument("--max-size", type=int, default=120, help="largest object extent in pixels (detection)")
    p.add_argument("--max-objects", type=int, default=6, help="objects per image: 1..N (detection)")
    p.add_argument("--max-same-iou", type=float, default=0.4,
                   help="two objects of one class overlap with box IoU below this (detection, default 0.4)")
    p.add_argument("--max-occlusion", type=float, default=0.35,
                   help="at most this fraction of an object is hidden by later ones (detection, default 0.35)")
    p.add_argument("--p-cluster", type=float, default=0.0,
                   help="chance that an object is placed over or against an earlier one (detection, default 0)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is not a dataset written by this tool")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also write a contact sheet of the first training images with their boxes drawn")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def _read_rgb(path: str):
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _preview_detection(out: str, path: str, classes, count: int = 8) -> None:
    import xml.etree.ElementTree as ET

    import numpy as np

    from detection.utils.visualize import draw_detections, make_contact_sheet, save_image

    main = os.path.join(out, "VOC2007", "ImageSets", "Main")
    split = "train" if os.path.exists(os.path.join(main, "train.txt")) else "test"
    with open(os.path.join(main, f"{split}.txt")) as f:
        stems = f.read().split()[:count]
    images, captions = [], []
    for stem in stems:
        img = _read_rgb(os.path.join(out, "VOC2007", "JPEGImages", f"{stem}.jpg"))
        boxes, labels, flags = [], [], []
        for obj in ET.parse(os.path.join(out, "VOC2007", "Annotations", f"{stem}.xml")).findall("object"):
            bb = [float(obj.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append([bb[0] - 1, bb[1] - 1, bb[2], bb[3]])
            labels.append(list(classes).index(obj.find("name").text) + 1)
            flags.append("T" * int(obj.find("truncated").text) + "D" * int(obj.find("difficult").text))
        images.append(draw_detections(img, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels), None,
                                      classes))
        captions.append(f"{stem}: {len(boxes)} obj" + (f" ({','.join(f for f in flags if f)})" if any(flags) else ""))
    h, w = images[0].shape[:2]
    sheet = make_contact_sheet(images, captions, ncols=4, cell_size=(w, h), title=f"{out} ({split}, ground truth)")
    save_image(path, sheet)
    print(f"preview: {path}")


def _preview_classification(out: str, path: str, classes, count: int = 6) -> None:
    from detection.utils.visualize import make_contact_sheet, save_image

    split = "train" if os.path.isdir(os.path.join(out, "train")) else "val"
    images, captions = [], []
    for cls in classes:
        folder = os.path.join(out, split, cls)
        for name in sorted(os.listdir(folder))[:count]:
            images.append(_read_rgb(os.path.join(folder, name)))
            captions.append(cls)
    sheet = make_contact_sheet(images, captions, ncols=count, cell_size=(128, 128), title=f"{out} ({split})")
    save_image(path, sheet)
    print(f"preview: {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    log = (lambda msg: None) if args.quiet else print
    classes = tuple(c for c in args.classes.split(",") if c) if args.classes else None
    try:
        if args.mode == "detection":
            kw = dict(num_train=args.num_train, num_val=args.num_val, num_test=args.num_test, seed=args.seed,
                      classes=classes, min_size=args.min_size, max_size=args.max_size,
                      max_objects=args.max_objects, max_same_iou=args.max_same_iou,
                      max_occlusion=args.max_occlusion, p_cluster=args.p_cluster)
            if args.size:
                kw["width"], kw["height"] = args.size
            params = synthetic.DetectionParams(**{k: v for k, v in kw.items() if v is not None})
            out = args.out or os.path.join("datasets", "synthetic")
            synthetic.generate_detection_dataset(out, params, force=args.force, log=log)
            if args.preview:
                _preview_detection(out, args.preview, params.classes)
        else:
            if args.num_test is not None:
                print("--num-test is ignored in classification mode (splits are train and val)", file=sys.stderr)
            kw = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed, classes=classes)
            if args.size:
                kw["width"], kw["height"] = args.size
            params = synthetic.ClassificationParams(**{k: v for k, v in kw.items() if v is not None})
            out = args.out or os.path.join("datasets", "synthetic_cls")
            synthetic.generate_classification_dataset(out, params, force=args.force, log=log)
            if args.preview:
                _preview_classification(out, args.preview, params.classes)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
