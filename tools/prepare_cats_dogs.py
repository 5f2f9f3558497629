#!/usr/bin/env python
r"""Turn Kaggle's dogs-vs-cats ``train/`` folder into the image-folder layout the classifier reads.

    python tools/prepare_cats_dogs.py --src ~/Downloads/dogs-vs-cats/train --out datasets/cats_vs_dogs
    python tools/prepare_cats_dogs.py --src .../train --out datasets/cats_vs_dogs_small --per-class 1000 --val 400

Input: files named ``cat.<n>.jpg`` / ``dog.<n>.jpg`` (other names are reported and left out). Output::

    <out>/train/cat/cat.<n>.jpg   <out>/train/dog/dog.<n>.jpg
    <out>/val/cat/...             <out>/val/dog/...

The split is seeded (``--seed``) and per class, so both splits keep the class balance; files are copied (or
hard/symbolic-linked with ``--link``). Unreadable files (empty, truncated JPEG, bad magic bytes) are listed and left
out. The run is atomic (``<out>.tmp-<pid>`` renamed at the end); an existing ``<out>`` is refused without --force.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

_NAME = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--src", required=True, help="Kaggle's train/ folder (cat.0.jpg ... dog.12499.jpg)")
    p.add_argument("--out", default="datasets/cats_vs_dogs", help="output root (default datasets/cats_vs_dogs)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of each class for val (default 0.2)")
    p.add_argument("--val", type=int, default=None, help="validation images per class (overrides --val-fraction)")
    p.add_argument("--per-class", type=int, default=None,
                   help="use only this many training images per class (e.g. 1000, as in the Keras blog)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", choices=("copy", "hardlink", "symlink"), default="copy")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    return p.parse_args(argv)


def split_files(names, val_fraction: float, val_count, per_class, seed: int) -> dict:
    """{'train': {cls: [names]}, 'val': {cls: [names]}}: per class, a seeded permutation of the files sorted by
    their number; the first ``val`` go to val, the next ``per_class`` (all when None) to train."""
    import numpy as np

    by_class: dict = {}
    for n in names:
        m = _NAME.match(n)
        by_class.setdefault(m.group(1).lower(), []).append((int(m.group(2)), n))
    out = {"train": {}, "val": {}}
    for k, cls in enumerate(sorted(by_class)):
        files = [n for _, n in sorted(by_class[cls])]
        rng = np.random.default_rng([seed, k])
        files = [files[i] for i in rng.permutation(len(files))]
        n_val = int(val_count) if val_count is not None else int(round(len(files) * val_fraction))
        if not 0 <= n_val < len(files):
            raise SystemExit(f"error: {n_val} validation images requested for class {cls}, which has {len(files)}")
        train = files[n_val:] if per_class is None else files[n_val:n_val + int(per_class)]
        out["val"][cls], out["train"][cls] = sorted(files[:n_val]), sorted(train)
    return out


def main(argv=None) -> int:
    from detection.data.records import check_image_header
    from detection.utils.atomic_dir import atomic_directory

    args = parse_args(argv)
    if not os.path.isdir(args.src):
        print(f"error: --src {args.src} is not a folder (Kaggle's dogs-vs-cats train/ folder)", file=sys.stderr)
        return 2
    out = os.path.normpath(args.out)
    if os.path.exists(out) and not args.force:
        print(f"error: {out} exists (pass --force to replace it)", file=sys.stderr)
        return 2
    names = sorted(os.listdir(args.src))
    ignored = [n for n in names if not _NAME.match(n)]
    bad = {}
    good = []
    for n in names:
        if _NAME.match(n):
            reason = check_image_header(os.path.join(args.src, n))
            (good.append(n) if reason is None else bad.__setitem__(n, reason))
    if not good:
        print(f"error: no cat.<n>.jpg / dog.<n>.jpg files in {args.src}", file=sys.stderr)
        return 2
    split = split_files(good, args.val_fraction, args.val, args.per_class, args.seed)
    place = {"copy": shutil.copy2, "hardlink": os.link,
             "symlink": lambda s, d: os.symlink(os.path.abspath(s), d)}[args.link]
    with atomic_directory(out) as tmp:
        for part, classes in split.items():
            for cls, files in classes.items():
                os.makedirs(os.path.join(tmp, part, cls))
                for n in files:
                    place(os.path.join(args.src, n), os.path.join(tmp, part, cls, n))
    for part, classes in split.items():
        print(f"{out}/{part}: " + ", ".join(f"{c} {len(f)}" for c, f in classes.items()))
    if ignored:
        print(f"left out {len(ignored)} file(s) not named cat.<n>.jpg / dog.<n>.jpg, e.g. {ignored[:3]}")
    for n, reason in bad.items():
        print(f"left out unreadable {os.path.join(args.src, n)}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
