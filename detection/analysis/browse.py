"""Ground truth drawn on images: as stored (the reader's boxes on the file's pixels), or exactly as the model
receives them in training (the training transform of detection/data/transforms.py, then the model's own
preprocessor: resize by TRAIN.SCALES / MAX_SIZE and padding; the picture is the padded input, un-normalised)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from detection.utils.visualize import draw_detections

__all__ = ["pick_indices", "stored_picture", "model_input_picture"]


def pick_indices(n_records: int, num: int) -> List[int]:
    """`num` record indices spread evenly over the split (all of them when num >= n_records)."""
    if num >= n_records:
        return list(range(n_records))
    return np.linspace(0, n_records - 1, num).round().astype(int).tolist()


def _names(labels, difficult, class_names):
    return [f"{class_names[l - 1]}{' (difficult)' if d else ''}" for l, d in zip(labels, difficult)]


def stored_picture(record: dict, class_names: Sequence[str]) -> Tuple[np.ndarray, str]:
    """(the image with its boxes and class names drawn, caption). Difficult boxes say so; crowd boxes are drawn
    like the others."""
    from detection.data.image_io import read_image_rgb

    image = read_image_rgb(record["path"], expected_hw=(record["height"], record["width"]))
    labels = np.asarray(record["labels"], np.int64)
    tags = _names(labels, np.asarray(record["difficult"], bool), class_names)
    picture = draw_detections(image, record["boxes"], np.arange(len(labels)), None, tags, label_offset=0,
                              colors=[_colour(l) for l in labels], min_side=192)
    return picture, f"{record['image_id']}: {len(labels)} boxes, {record['width']}x{record['height']}"


def _colour(label: int):
    from detection.utils.visualize import class_color

    return class_color(int(label) - 1)


def model_input_picture(dataset, index: int, view, class_names: Sequence[str], seed: int) -> Tuple[np.ndarray, str]:
    """(the training input of record `index` as the model receives it, caption): `dataset` is a DetectionDataset
    with the training transform (seeded with `seed` for this sample), then view.preprocess in training mode (torch
    seeded with `seed`: the scale draw)."""
    image, target = dataset[(index, seed)]
    pre = view.preprocess
    was_training = pre.training
    pre.train()
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            batch = pre([image], [target])
    finally:
        pre.train(was_training)
    picture = batch.images[0] * pre.pixel_std + pre.pixel_mean  # the padded input, un-normalised
    keep = batch.gt_labels[0] > 0
    labels = batch.gt_labels[0][keep].numpy()
    boxes = batch.gt_boxes[0][keep].numpy()
    tags = [class_names[l - 1] for l in labels]
    drawn = draw_detections(picture.clamp(0, 1), boxes, np.arange(len(labels)), None, tags, label_offset=0,
                            colors=[_colour(l) for l in labels], min_side=192)
    nh, nw = (int(v) for v in batch.image_sizes[0])
    hp, wp = batch.images.shape[-2:]
    rec = dataset.records[target["index"]]
    return drawn, f"{rec['image_id']}: {len(labels)} boxes, {nw}x{nh} (padded {wp}x{hp})"
