#!/usr/bin/env python
"""Convert a detection dataset between the VOC, COCO and YOLO layouts.

  python tools/convert_dataset.py --from voc  --root datasets/synthetic/VOC2007 --sets trainval test \\
      --classes circle,square,triangle --to yolo --out datasets/synthetic_yolo
  python tools/convert_dataset.py --from yolo --root datasets/synthetic_yolo --sets trainval test --to coco --out DIR
  python tools/convert_dataset.py --from coco --root datasets/synthetic --sets annotations/instances_train.json:train \\
      --to voc --out DIR [--link]

Sets are what DATA.TRAIN_SETS takes for that format (VOC split names, or YEAR_SPLIT under a VOCdevkit; COCO
'ann.json[:image_dir]' relative to --root; YOLO data.yaml splits). Each set becomes one split of the output, named
after it (the VOC split, the COCO JSON's 'instances_<name>', the YOLO key) unless --names gives the names. The
readers validate as in training (errors name the file and line); boxes keep their pixels exactly (see
detection/data/convert.py for what each format cannot carry: VOC has no crowd flag, COCO no difficult flag, YOLO
neither). Images are copied, or symlinked with --link.
Exit codes: 0 done, 2 bad arguments or input.
"""
from __future__ import annotations

import argparse
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

FORMATS = ("voc", "coco", "yolo")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convert_dataset.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--from", dest="source", choices=FORMATS, required=True, help="input layout")
    p.add_argument("--root", required=True, help="input dataset root (VOC folder or VOCdevkit, COCO root, YOLO "
                                                  "folder or its data.yaml)")
    p.add_argument("--sets", nargs="+", required=True, help="sets to convert, as DATA.TRAIN_SETS names them")
    p.add_argument("--classes", default=None, help="comma-separated class names (required for VOC; for COCO and "
                                                   "YOLO: the label order, default the file's own)")
    p.add_argument("--to", dest="target", choices=FORMATS, required=True, help="output layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--names", nargs="+", default=None, help="output split names, one per set")
    p.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    return p


def read_sets(source: str, root: str, sets, classes):
    """[(split name, DetectionRecords)] for every set of the input dataset."""
    from detection.data.build import resolve_coco_set
    from detection.data.coco import load_coco
    from detection.data.voc import load_voc, resolve_voc_set
    from detection.data.yolo import load_yolo

    out = []
    for entry in sets:
        if source == "voc":
            if not classes:
                raise ValueError("--classes is required for a VOC dataset (VOC has no class list of its own)")
            recs = load_voc(root, [entry], classes)
            name = resolve_voc_set(root, entry)[1]
        elif source == "coco":
            json_path, image_dir = resolve_coco_set(root, entry)
            recs = load_coco(json_path, image_dir, class_names=classes or None)
            stem = os.path.splitext(os.path.basename(json_path))[0]
            name = stem[len("instances_"):] if stem.startswith("instances_") else stem
        else:
            recs = load_yolo(root, [entry], classes or None, unlabeled="negative")
            name = entry
        out.append((name, recs))
    return out


def convert(args) -> int:
    from detection.data.convert import WRITERS

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    parts = read_sets(args.source, args.root, args.sets, classes)
    if args.names:
        if len(args.names) != len(parts):
            raise ValueError(f"--names gives {len(args.names)} names for {len(parts)} sets")
        parts = [(n, recs) for n, (_, recs) in zip(args.names, parts)]
    splits = dict(parts)
    if len(splits) != len(parts):
        raise ValueError(f"two sets map to the same split name ({[n for n, _ in parts]}); pass --names")
    os.makedirs(args.out, exist_ok=True)
    lost = WRITERS[args.target](splits, args.out, link=args.link)
    for name, recs in splits.items():
        n_boxes = sum(int(r["boxes"].shape[0]) for r in recs.records)
        print(f"{name}: {len(recs)} images, {n_boxes} boxes, {len(recs.class_names)} classes")
    notes = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in lost.items() if v)
    if notes:
        print(f"not carried by {args.target}: {notes}")
    print(f"wrote {args.target} layout to {os.path.abspath(args.out)}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.data.records import DatasetError
    from detection.utils.errors import one_line

    try:
        return convert(args)
    except (DatasetError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
