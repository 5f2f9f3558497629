"""Checks shared by the dataset readers, the read statistics and the container they return.

A *record* is one image's annotation, a plain dict (picklable, cheap to send to DataLoader workers)::

    {image_id, path, height, width,
     boxes: float32 [N, 4] xyxy, absolute, continuous pixels (width = x2 - x1),
     labels: int64 [N] in 1..K (0 is the detector's background),
     difficult: bool [N],
     iscrowd: bool [N]}            # COCO readers also keep ``coco_id``; VOC readers write all-False iscrowd

Readers report boxes outside the image (clipped and counted), degenerate boxes (dropped with a warning that
names the file) and bad images through :class:`ReadStats`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetError",
    "AnnotationError",
    "ReadStats",
    "DetectionRecords",
    "make_record",
    "clip_and_filter_boxes",
    "check_image_header",
    "trainable_mask",
    "filter_empty_records",
    "check_records",
    "first_duplicate",
]


class DatasetError(ValueError):
    """A dataset that cannot be used as configured (no image left, no class list, ...); the message names the
    sets, folder or config key. The tools print it and exit with code 2."""


class AnnotationError(DatasetError):
    """A malformed, incomplete or inconsistent annotation file; the message names the file (and position)."""


@dataclasses.dataclass
class ReadStats:
    """What a reader read: counts over all images, and the files it skipped or whose boxes it dropped."""

    images: int = 0  # images kept (records returned)
    objects: int = 0  # boxes kept in the records (all of them: difficult and crowd included)
    clipped: int = 0  # boxes that crossed the image border and were clipped to it
    dropped: int = 0  # degenerate boxes (x2 <= x1 or y2 <= y1 after clipping) that were dropped
    difficult: int = 0  # kept boxes flagged difficult (VOC)
    crowd: int = 0  # kept boxes flagged iscrowd (COCO)
    empty_images: int = 0  # kept images without any box
    skipped_images: int = 0  # images left out (unreadable with skip_bad_images, or empty and filtered)
    # every clipped or dropped box: {source, index (in the file), box (xyxy as read, before clipping), kind
    # ('outside': crossed the border, clipped; 'degenerate': no area after clipping, dropped), object}
    box_issues: List[dict] = dataclasses.field(default_factory=list)

    def merge(self, other: "ReadStats") -> "ReadStats":
        """Field-wise sum (a new object; box_issues concatenated)."""
        return ReadStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def as_dict(self) -> Dict[str, int]:
        """The counts (box_issues left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "box_issues"}

    def summary(self, name: str = "dataset") -> str:
        """One line: ``<name>: I images, O objects (D difficult, C crowd), X clipped, Y dropped boxes, ...``."""
        return (f"{name}: {self.images} images, {self.objects} objects ({self.difficult} difficult, "
                f"{self.crowd} crowd), {self.clipped} boxes clipped, {self.dropped} degenerate boxes dropped, "
                f"{self.empty_images} images without boxes, {self.skipped_images} images skipped")


@dataclasses.dataclass
class DetectionRecords:
    """A reader's result: the records, the class names (label k is ``class_names[k - 1]``), stats and meta.

    meta holds reader-specific extras, e.g. for COCO ``contiguous_to_coco_id`` / ``coco_id_to_contiguous``
    (dicts label <-> category id) and ``annotation_files``; for VOC ``voc_dirs`` and ``image_sets``.
    """

    records: List[dict]
    class_names: Tuple[str, ...]
    stats: ReadStats
    meta: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i):
        return self.records[i]


def clip_and_filter_boxes(boxes: np.ndarray, height: int, width: int, source: str,
                          stats: Optional[ReadStats] = None, labels_hint=None) -> np.ndarray:
    """Clip xyxy boxes to [0, width] x [0, height] in place and return the mask of non-degenerate ones.

    boxes: float32 [N, 4] continuous xyxy (modified in place). source: the file named in warnings.
    A clipped box is counted in ``stats.clipped``; a box with x2 <= x1 or y2 <= y1 after clipping is counted in
    ``stats.dropped`` and logged as a warning naming ``source`` (and the object: ``labels_hint[i]``, a sequence of
    strings or a callable i -> str).
    Returns keep: bool [N].
    """
    boxes = np.asarray(boxes)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=bool)
    limits = np.array([width, height, width, height], dtype=boxes.dtype)
    clipped = np.clip(boxes, 0, limits)
    changed = np.any(clipped != boxes, axis=1)
    original = boxes[changed] if changed.any() else None
    boxes[...] = clipped
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if stats is not None:
        stats.clipped += int(np.count_nonzero(changed & keep))
        stats.dropped += int(np.count_nonzero(~keep))
        flagged = np.flatnonzero(changed | ~keep)
        as_read = boxes.copy()
        if original is not None:
            as_read[changed] = original
        for i in flagged:  # only the few bad boxes: the report lists them
            stats.box_issues.append(dict(source=source, index=int(i), box=[float(v) for v in as_read[i]],
                                         kind="outside" if keep[i] else "degenerate", object=_hint(labels_hint, i)))
    for i in np.flatnonzero(~keep):
        hint = _hint(labels_hint, i)
        what = f" ({hint})" if hint is not None else ""
        logger.warning("%s: dropped degenerate box #%d%s %s (x2 <= x1 or y2 <= y1 after clipping to %dx%d)",
                       source, i, what, np.round(boxes[i], 2).tolist(), width, height)
    return keep


def first_duplicate(keys: Sequence) -> Optional[Tuple[int, int]]:
    """(i, j), i < j, of the first key met again (smallest j), or None when all keys differ.

    Keys compare as Python values (1 == 1.0, as in the dicts pycocotools indexes by id); unhashable keys (a list
    given as an id) compare by their repr. Readers use it to refuse an image or annotation listed twice."""
    seen: Dict = {}
    for j, key in enumerate(keys):
        try:
            i = seen.setdefault(key, j)
        except TypeError:
            i = seen.setdefault(repr(key), j)
        if i != j:
            return i, j
    return None


def _hint(labels_hint, i):
    return labels_hint(i) if callable(labels_hint) else labels_hint[i] if labels_hint is not None else None


def make_record(image_id, path: str, height: int, width: int, boxes, labels, difficult=None, iscrowd=None,
                **extra) -> dict:
    """Build a record with the contract's dtypes and shapes (boxes float32 [N,4], labels int64 [N], flags bool)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    labels = np.asarray(labels, dtype=np.int64).reshape(n)
    difficult = np.zeros(n, bool) if difficult is None else np.asarray(difficult, dtype=bool).reshape(n)
    iscrowd = np.zeros(n, bool) if iscrowd is None else np.asarray(iscrowd, dtype=bool).reshape(n)
    rec = dict(image_id=image_id, path=str(path), height=int(height), width=int(width), boxes=boxes,
               labels=labels, difficult=difficult, iscrowd=iscrowd)
    rec.update(extra)
    return rec


_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_image_header(path: str) -> Optional[str]:
    """Cheap readability check of an image file (no decoding): None if it looks fine, else the reason.

    Checks that the file exists, is not empty and, for JPEG/PNG, starts with the right magic bytes; for JPEG also
    that the end-of-image marker is present (a truncated download decodes to grey in OpenCV without an error).
    Other formats only get the existence check; the full check is the decode in the dataset.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return "file not found"
    if size == 0:
        return "empty file"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            is_jpeg, is_png = head[:2] == _JPEG_MAGIC, head[:8] == _PNG_MAGIC
            ext = os.path.splitext(path)[1].lower()
            if ext in (".jpg", ".jpeg", ".png") and not (is_jpeg or is_png):
                return f"not a {ext[1:].upper()} image (bad magic bytes)"
            if is_jpeg:
                f.seek(max(0, size - 65536))
                if f.read().rfind(b"\xff\xd9") < 0:
                    return "truncated JPEG (no end-of-image marker)"
    except OSError as e:
        return f"cannot open: {e}"
    return None


def trainable_mask(record: dict, use_difficult: bool = False, use_crowd: bool = False) -> np.ndarray:
    """bool [N]: the record's boxes a detector trains on (difficult ones only if use_difficult; crowd never,
    unless use_crowd)."""
    n = record["boxes"].shape[0]
    keep = np.ones(n, dtype=bool)
    if not use_difficult and "difficult" in record:
        keep &= ~np.asarray(record["difficult"], dtype=bool)
    if not use_crowd and "iscrowd" in record:
        keep &= ~np.asarray(record["iscrowd"], dtype=bool)
    return keep


def filter_empty_records(records: Sequence[dict], use_difficult: bool = False, use_crowd: bool = False,
                         name: str = "dataset") -> List[dict]:
    """Drop records without any trainable box (see :func:`trainable_mask`); logs how many were dropped."""
    kept = [r for r in records if trainable_mask(r, use_difficult, use_crowd).any()]
    if len(kept) < len(records):
        logger.info("%s: left out %d of %d images without trainable boxes", name, len(records) - len(kept),
                    len(records))
    return kept


def check_records(records: Sequence[dict]) -> None:
    """Assert the record contract (dtypes, shapes, boxes inside the image, labels >= 1); for tests and tools."""
    for r in records:
        b, lab = r["boxes"], r["labels"]
        where = r.get("path", r.get("image_id"))
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 4, f"{where}: boxes {b.dtype} {b.shape}"
        assert lab.dtype == np.int64 and lab.shape == (b.shape[0],), f"{where}: labels {lab.dtype} {lab.shape}"
        assert r["difficult"].dtype == bool and r["difficult"].shape == lab.shape, f"{where}: difficult"
        assert r["iscrowd"].dtype == bool and r["iscrowd"].shape == lab.shape, f"{where}: iscrowd"
        if b.shape[0]:
            assert (lab >= 1).all(), f"{where}: labels must be >= 1"
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), f"{where}: degenerate box"
            assert (b[:, :2] >= 0).all() and (b[:, 2] <= r["width"]).all() and (b[:, 3] <= r["height"]).all(), \
                f"{where}: box outside the image"
