"""Read images as RGB uint8 arrays with OpenCV, with errors that name the file.

EXIF orientation is applied (OpenCV's IMREAD_COLOR, as detectron2's read_image and every image viewer do), in
training, testing and the demo alike: boxes are in the pixels of the image as displayed. A JPEG whose entropy-coded
data is corrupt (libjpeg warns "Corrupt JPEG data" on stderr and still returns an image) is a bad image.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from detection.data.records import check_image_header
from detection.utils.errors import worker_message

__all__ = ["ImageReadError", "read_image_rgb", "read_record_image"]

logger = logging.getLogger(__name__)


class ImageReadError(OSError):
    """A missing, empty, truncated or undecodable image; the message names the file and the reason.

    ``ImageReadError(message)`` with one argument rebuilds it from its message (pickling, and torch's DataLoader,
    which re-raises a worker's exception as ``type(exc)(traceback text)``: the original message is recovered).
    """

    _PREFIX = "cannot read image "

    def __init__(self, path: str, reason: Optional[str] = None):
        if reason is None:
            message = worker_message(path)
            path, _, reason = message[len(self._PREFIX):].partition(": ") if message.startswith(self._PREFIX) \
                else ("", "", message)
        else:
            message = f"{self._PREFIX}{path}: {reason}"
        super().__init__(message)
        self.path = path
        self.reason = reason


# libjpeg warnings that mean the pixels are wrong (it still returns an image, grey or garbled where data is bad)
_CORRUPT_JPEG = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters",
                 "Inconsistent progression sequence")
_stderr_lock = threading.Lock()


def _imdecode_with_warnings(data: np.ndarray, flags: int) -> Tuple[Optional[np.ndarray], str]:
    """cv2.imdecode with file descriptor 2 captured: (image or None, what the C decoder wrote to stderr).

    The text that is not a corrupt-data warning is written back to stderr."""
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable stderr: decode without the check
            return cv2.imdecode(data, flags), ""
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    img = cv2.imdecode(data, flags)
                finally:
                    os.dup2(saved, 2)
                tmp.seek(0)
                text = tmp.read().decode("utf-8", "replace")
        finally:
            os.close(saved)
    other = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(_CORRUPT_JPEG))
    if other:
        os.write(2, other.encode())
    return img, text


def exif_orientation(path: str) -> int:
    """The EXIF orientation tag (1..8; 1 = upright, 5..8 swap width and height) of an image file, 1 if none."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # no PIL, no EXIF, or a file PIL cannot parse: no rotation known
        return 1


def read_image_rgb(path: str, expected_hw=None) -> np.ndarray:
    """Decode ``path`` to uint8 [H, W, 3] RGB (grey and 16-bit images are converted, alpha is dropped), turned
    upright by its EXIF orientation tag.

    expected_hw: optional (height, width) from the annotation; a different decoded size raises too (the message
    says when the EXIF tag is what swapped them).
    Raises ImageReadError (an OSError) naming the file: missing, empty, truncated JPEG, corrupt JPEG data,
    undecodable, wrong size.
    """
    path = os.fspath(path)
    reason = check_image_header(path)
    if reason is not None:
        raise ImageReadError(path, reason)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(path, str(e)) from None
    if data[:2].tobytes() == b"\xff\xd8":
        img, warnings = _imdecode_with_warnings(data, cv2.IMREAD_COLOR)
        corrupt = [line.strip() for line in warnings.splitlines() if line.startswith(_CORRUPT_JPEG)]
        if corrupt:
            raise ImageReadError(path, f"libjpeg: {corrupt[0]} (the pixels are garbled)")
    else:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.size == 0:
        raise ImageReadError(path, "OpenCV cannot decode it (corrupt or unsupported format)")
    if expected_hw is not None and tuple(img.shape[:2]) != (int(expected_hw[0]), int(expected_hw[1])):
        h, w = int(expected_hw[0]), int(expected_hw[1])
        note = ""
        orientation = exif_orientation(path)
        if orientation != 1:
            note = (f"; its EXIF orientation tag {orientation} was applied (images are read upright, as shown), so "
                    f"the annotation must describe the upright image")
        raise ImageReadError(path, f"decoded size {img.shape[0]}x{img.shape[1]} (HxW) differs from the "
                                   f"annotation's {h}x{w}{note}")
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
