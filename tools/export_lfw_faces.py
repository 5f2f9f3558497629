#!/usr/bin/env python
r"""Export scikit-image's ``lfw_subset()`` (200 grey 25x25 images: 100 faces, then 100 non-faces) as an image folder.

    python tools/export_lfw_faces.py --out datasets/lfw_faces
    python tools/train_net.py --cfg configs/faces_mobilenet_v2.yaml

Output (PNG files, a seeded split per class, ``--val-fraction`` of each class in val)::

    <out>/train/faces/face_<i>.png       <out>/train/not_faces/not_face_<i>.png
    <out>/val/faces/...                  <out>/val/not_faces/...

``<i>`` is the image's index in ``lfw_subset()``. The data ship with scikit-image (nothing is downloaded). The run
is atomic; an existing ``<out>`` written with the same arguments is kept, otherwise refused without --force.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

CLASSES = ("faces", "not_faces")
_STEMS = {"faces": "face", "not_faces": "not_face"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", default="datasets/lfw_faces")
    p.add_argument("--val-fraction", type=float, default=0.3, help="fraction of each class in val (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    return p.parse_args(argv)


def export_lfw_faces(out: str, val_fraction: float = 0.3, seed: int = 0, force: bool = False) -> dict:
    """Write the layout (see the module docstring); returns the manifest {'counts': {split: {cls: n}}, ...}.
    Raises ImportError without scikit-image and FileExistsError for a foreign ``out`` without force."""
    import cv2
    import numpy as np
    from skimage import data

    from detection.utils.atomic_dir import atomic_directory

    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    manifest_core = {"source": "skimage.data.lfw_subset", "val_fraction": val_fraction, "seed": seed}
    mpath = os.path.join(out, "manifest.json")
    if os.path.exists(out):
        try:
            with open(mpath) as f:
                old = json.load(f)
            if {k: old.get(k) for k in manifest_core} == manifest_core and not force:
                return old
        except (OSError, ValueError):
            old = None
        if not force and old is None:
            raise FileExistsError(f"{out} exists and was not written by this tool (pass --force to replace it)")
    images = np.asarray(data.lfw_subset())  # [200, 25, 25] float in 0..1
    if images.shape[0] != 200:
        raise ValueError(f"lfw_subset() returned {images.shape[0]} images, expected 200")
    u8 = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    groups = {"faces": np.arange(0, 100), "not_faces": np.arange(100, 200)}
    counts = {"train": {}, "val": {}}
    with atomic_directory(out) as tmp:
        for k, cls in enumerate(CLASSES):
            idx = groups[cls][np.random.default_rng([seed, k]).permutation(100)]
            n_val = int(round(100 * val_fraction))
            for split, part in (("val", idx[:n_val]), ("train", idx[n_val:])):
                d = os.path.join(tmp, split, cls)
                os.makedirs(d)
                for i in sorted(part.tolist()):
                    path = os.path.join(d, f"{_STEMS[cls]}_{i:03d}.png")
                    if not cv2.imwrite(path, u8[i]):
                        raise OSError(f"cannot write {path}")
                counts[split][cls] = int(len(part))
        manifest = dict(manifest_core, counts=counts, classes=list(CLASSES))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
    return manifest


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = export_lfw_faces(args.out, args.val_fraction, args.seed, args.force)
    except ImportError as exc:
        print(f"error: scikit-image is needed for lfw_subset(): {exc}", file=sys.stderr)
        return 2
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, classes in manifest["counts"].items():
        print(f"{args.out}/{split}: " + ", ".join(f"{c} {n}" for c, n in classes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
