"""Read images as RGB uint8 arrays with OpenCV, with errors that name the file."""

from __future__ import annotations

import logging
import os
from typing import Sequence, Tuple

import cv2
import numpy as np

from detection.data.records import check_image_header

__all__ = ["ImageReadError", "read_image_rgb", "read_record_image"]

logger = logging.getLogger(__name__)


class ImageReadError(OSError):
    """A missing, empty, truncated or undecodable image; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def read_image_rgb(path: str, expected_hw=None) -> np.ndarray:
    """Decode ``path`` to uint8 [H, W, 3] RGB (grey and 16-bit images are converted, alpha is dropped).

    EXIF orientation is ignored on purpose: annotations (VOC sizes, COCO width/height) describe the stored pixels.
    expected_hw: optional (height, width) from the annotation; a different decoded size raises too.
    Raises ImageReadError (an OSError) naming the file: missing, empty, truncated JPEG, undecodable, wrong size.
    """
    path = os.fspath(path)
    reason = check_image_header(path)
    if reason is not None:
        raise ImageReadError(path, reason)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(path, str(e)) from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.ndim != 3 or img.size == 0:
        raise ImageReadError(path, "OpenCV cannot decode it (corrupt or unsupported format)")
    if expected_hw is not None and tuple(img.shape[:2]) != (int(expected_hw[0]), int(expected_hw[1])):
        raise ImageReadError(path, f"decoded size {img.shape[0]}x{img.shape[1]} (HxW) differs from the "
                                   f"annotation's {int(expected_hw[0])}x{int(expected_hw[1])}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_record_image(records: Sequence[dict], index: int, skip_bad_images: bool = False,
                      check_size: bool = False) -> Tuple[int, np.ndarray]:
    """(index actually read, RGB uint8 [H, W, 3]) of ``records[index]['path']``.

    skip_bad_images: an unreadable image is replaced by the next readable record (wrapping around), with a
    warning naming the file; otherwise ImageReadError is raised. check_size: the decoded size must equal the
    record's (height, width).
    """
    n = len(records)
    for k in range(n if skip_bad_images else 1):
        i = (index + k) % n
        rec = records[i]
        try:
            hw = (rec["height"], rec["width"]) if check_size else None
            return i, read_image_rgb(rec["path"], expected_hw=hw)
        except ImageReadError as e:
            if not skip_bad_images:
                raise
            logger.warning("%s; skipped (DATA.SKIP_BAD_IMAGES)", e)
    raise ImageReadError(records[index]["path"], "no readable image left in the dataset")
