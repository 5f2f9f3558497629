"""Image-folder reader (Keras ``flow_from_directory`` / torchvision ``ImageFolder`` layout) for classification.

    <root>/<split>/<class_name>/<image files>       e.g. cats_vs_dogs/train/cat/cat.0.jpg

Class ids follow the **sorted** folder names (``cat`` = 0, ``dog`` = 1), as Keras and torchvision do, unless a
class list is given (then that order; every listed folder must exist). A record is a plain dict::

    {image_id: "<class>/<file>", path, label: int in 0..K-1, class_name}

Bad images follow the detection readers' rules: a cheap header check (missing, empty, wrong magic bytes,
truncated JPEG) raises ImageReadError naming the file, or skips it with a warning when ``skip_bad_images``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import List, Optional, Sequence, Tuple

from detection.data.image_io import ImageReadError
from detection.data.records import DatasetError, check_image_header

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderRecords", "find_classes", "load_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class ImageFolderRecords:
    """A reader's result: records, class names (label k is ``class_names[k]``), counts and meta."""

    records: List[dict]
    class_names: Tuple[str, ...]
    counts: dict  # class name -> images kept
    skipped: List[str]  # paths of images left out (unreadable, with skip_bad_images)
    meta: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self, name: str = "image folder") -> str:
        per = ", ".join(f"{c}: {n}" for c, n in self.counts.items())
        return f"{name}: {len(self.records)} images ({per}), {len(self.skipped)} skipped"


def find_classes(folder: str) -> Tuple[str, ...]:
    """Sorted names of the non-hidden sub-folders of ``folder`` (the class names); FileNotFoundError if absent."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist (expected <root>/<split>/<class>/<images>)")
    return tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")))


def load_image_folder(root: str, split: str, class_names: Optional[Sequence[str]] = None, check_images: bool = True,
                      skip_bad_images: bool = False, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                      name: Optional[str] = None) -> ImageFolderRecords:
    """Read ``root/split/<class>/*`` into records (files sorted by name within each class, classes in label order).

    class_names: label order; None or empty = the sorted folder names. A listed class without a folder is an
        error; folders not listed are ignored with a warning.
    check_images: header-check every file (cheap); a bad one raises ImageReadError naming it, or is skipped with a
        warning when skip_bad_images. Files whose extension is not in ``extensions`` are ignored.
    Raises FileNotFoundError for a missing folder and ValueError when no image is found.
    """
    folder = os.path.join(os.path.expanduser(root), split)
    found = find_classes(folder)
    if class_names:
        classes = tuple(str(c) for c in class_names)
        missing = [c for c in classes if c not in found]
        if missing:
            raise FileNotFoundError(
                f"class folder(s) {missing} not found in {folder} (it has {list(found)}); set DATA.CLASSES to the "
                f"folder names in label order, or to [] to use the sorted folder names")
        extra = [c for c in found if c not in classes]
        if extra:
            logger.warning("%s: folders %s are not in the class list and are ignored", folder, extra)
    else:
        classes = found
    if not classes:
        raise DatasetError(f"no class folders in {folder} (expected {folder}/<class>/<images>)")
    exts = tuple(e.lower() for e in extensions)
    records, counts, skipped = [], {}, []
    for label, cls in enumerate(classes):
        cdir = os.path.join(folder, cls)
        files = sorted(e.name for e in os.scandir(cdir)
                       if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(exts))
        kept = 0
        for fname in files:
            path = os.path.join(cdir, fname)
            if check_images:
                reason = check_image_header(path)
                if reason is not None:
                    if not skip_bad_images:
                        raise ImageReadError(path, reason + " (set DATA.SKIP_BAD_IMAGES: True to skip such files)")
                    logger.warning("cannot read image %s: %s; skipped (DATA.SKIP_BAD_IMAGES)", path, reason)
                    skipped.append(path)
                    continue
            records.append(dict(image_id=f"{cls}/{fname}", path=path, label=label, class_name=cls))
            kept += 1
        counts[cls] = kept
        if kept == 0:
            logger.warning("%s: class folder %s holds no readable image", folder, cls)
    if not records:
        raise DatasetError(f"no images found in {folder}/<class>/ (extensions {list(exts)})")
    out = ImageFolderRecords(records, classes, counts, skipped, meta=dict(root=root, split=split, folder=folder))
    logger.info("%s", out.summary(name or f"image folder {folder}"))
    return out
