"""Config -> records, datasets and DataLoaders. The only place in detection.data that reads a config.

Training loader: ``DetectionDataset`` (train transform) -> infinite seeded ``TrainingSampler`` sharded by rank ->
``GroupedBatchSampler`` (landscape/portrait batches, TRAIN.IMS_PER_BATCH per process) -> ``collate_detection``
-> ``(images: list[Tensor[3,H,W]], targets: list[dict])``. Test loader: contiguous ``InferenceSampler`` shards,
TEST.IMS_PER_BATCH, same collate. Seeded runs repeat exactly, augmentation included (see ``worker_init_fn``).
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.data import BatchSampler, DataLoader

from detection.data.coco import load_coco
from detection.data.dataset import DetectionDataset
from detection.data.records import DatasetError, DetectionRecords, ReadStats, filter_empty_records
from detection.data.samplers import GroupedBatchSampler, InferenceSampler, SkipBatches, TrainingSampler
from detection.data.voc import load_voc
from detection.data.yolo import load_yolo
from detection.utils.dist import rank_and_world_size, shared_random_seed
from detection.utils.seed import worker_init_fn

logger = logging.getLogger(__name__)

__all__ = [
    "collate_detection",
    "worker_init_fn",
    "resolve_coco_set",
    "build_detection_records",
    "build_detection_dataset",
    "build_detection_train_loader",
    "build_detection_test_loader",
]


def collate_detection(batch: Sequence[Tuple[torch.Tensor, dict]]) -> Tuple[List[torch.Tensor], List[dict]]:
    """[(image, target), ...] -> (list of images, list of targets): images keep their own sizes."""
    return [b[0] for b in batch], [b[1] for b in batch]


def resolve_coco_set(root: str, entry: str) -> Tuple[str, str]:
    """(json path, image folder) for a COCO set entry ``'ANNOTATIONS.json'`` or ``'ANNOTATIONS.json:IMAGE_DIR'``.

    Relative paths are taken under ``root`` (DATA.ROOT) when they exist there. Without IMAGE_DIR, an
    ``instances_<split>.json`` file uses ``root/<split>`` if that folder exists (COCO's layout), else ``root``.
    """
    json_path, image_dir = entry, None
    head, sep, tail = entry.rpartition(":")
    if sep and tail and head.lower().endswith(".json"):
        json_path, image_dir = head, tail
    if not os.path.isabs(json_path) and os.path.exists(os.path.join(root, json_path)):
        json_path = os.path.join(root, json_path)
    if image_dir is None:
        stem = os.path.splitext(os.path.basename(json_path))[0]
        split = stem.split("_", 1)[1] if stem.startswith("instances_") else None
        image_dir = os.path.join(root, split) if split and os.path.isdir(os.path.join(root, split)) else root
    elif not os.path.isabs(image_dir):
        image_dir = os.path.join(root, image_dir)
    return json_path, image_dir


def _join(parts: Sequence[DetectionRecords], name: str) -> DetectionRecords:
    first = parts[0]
    for p in parts[1:]:
        if p.class_names != first.class_names:
            raise DatasetError(f"{name}: the joined sets have different class lists: {first.class_names} vs "
                             f"{p.class_names}")
    stats = ReadStats()
    for p in parts:
        stats = stats.merge(p.stats)
    records = [r for p in parts for r in p.records]
    meta = dict(first.meta)
    if len(parts) > 1:
        meta["parts"] = [p.meta for p in parts]
        ids = [r["image_id"] for r in records]
        if len(set(ids)) != len(ids):
            logger.warning("%s: image ids repeat across the joined sets", name)
        logger.info("%s", stats.summary(name))
    return DetectionRecords(records, first.class_names, stats, meta)


def build_detection_records(cfg, is_train: bool) -> DetectionRecords:
    """Read DATA.TRAIN_SETS (joined) or DATA.TEST_SET with the DATA.FORMAT reader under DATA.ROOT.

    Classes: DATA.CLASSES (VOC layout needs it; for COCO, [] = the JSON's categories in id order, for YOLO data.yaml's
    names, else the same names in the order given), or with DATA.CLASSES [] the named list DATA.CLASSES_FROM. Training sets drop images without trainable boxes when DATA.FILTER_EMPTY (boxes
    that are neither crowd nor - unless TRAIN.USE_DIFFICULT - difficult); test sets keep every image.
    """
    data = cfg.DATA
    sets = data.TRAIN_SETS if is_train else data.TEST_SET
    sets = [sets] if isinstance(sets, str) else list(sets)
    if not sets:
        raise DatasetError(f"DATA.{'TRAIN_SETS' if is_train else 'TEST_SET'} is empty")
    root = os.path.expanduser(data.ROOT)
    classes = tuple(data.CLASSES)
    if not classes and data.CLASSES_FROM:  # e.g. torchvision's COCO labels, 'N/A' placeholders included
        from detection.data.categories import named_class_list

        classes = tuple(named_class_list(data.CLASSES_FROM))
    check, skip = bool(data.CHECK_IMAGES), bool(data.SKIP_BAD_IMAGES)
    split_name = "train" if is_train else "test"
    if data.FORMAT == "voc":
        if not classes:
            raise DatasetError("DATA.CLASSES is empty: a VOC-layout dataset has no class list of its own; set "
                             "DATA.CLASSES")
        out = load_voc(root, sets, classes, check_images=check, skip_bad_images=skip,
                       name=f"VOC {'+'.join(sets)} ({split_name})")
    elif data.FORMAT == "coco":
        parts = []
        for entry in sets:
            json_path, image_dir = resolve_coco_set(root, entry)
            parts.append(load_coco(json_path, image_dir, class_names=classes or None, check_images=check,
                                   skip_bad_images=skip, name=f"COCO {entry} ({split_name})"))
        out = _join(parts, f"COCO {'+'.join(sets)} ({split_name})")
    elif data.FORMAT == "yolo":
        out = load_yolo(root, sets, classes or None, unlabeled=data.YOLO_UNLABELED, check_images=check,
                        skip_bad_images=skip, name=f"YOLO {'+'.join(sets)} ({split_name})")
    else:
        raise DatasetError(f"DATA.FORMAT {data.FORMAT!r} has no detection reader (expected 'voc', 'coco' or 'yolo')")
    if is_train and data.FILTER_EMPTY:
        kept = filter_empty_records(out.records, use_difficult=bool(cfg.TRAIN.USE_DIFFICULT), use_crowd=False,
                                    name=f"{data.FORMAT} {'+'.join(sets)}")
        out.stats.skipped_images += len(out.records) - len(kept)
        out.stats.images = len(kept)
        out.records = kept
    if not out.records:
        raise DatasetError(f"no images left in {data.FORMAT} sets {sets} under {root} ({out.stats.summary()})")
    return out


def build_detection_dataset(cfg, is_train: bool, records: Optional[DetectionRecords] = None) -> DetectionDataset:
    """DetectionDataset over ``records`` (default: build_detection_records) with build_transform(cfg, is_train).

    Training targets leave out crowd boxes and, unless TRAIN.USE_DIFFICULT, difficult ones; test targets keep
    difficult boxes (evaluators use the records themselves). Unreadable images are skipped (training only)
    when DATA.SKIP_BAD_IMAGES.
    """
    from detection.data.transforms import build_transform  # albumentations: imported where used

    if records is None:
        records = build_detection_records(cfg, is_train)
    return DetectionDataset(
        records.records, transform=build_transform(cfg, is_train),
        use_difficult=bool(cfg.TRAIN.USE_DIFFICULT) if is_train else True, use_crowd=False,
        skip_bad_images=bool(cfg.DATA.SKIP_BAD_IMAGES) and is_train, class_names=records.class_names,
        meta=records.meta)


def _seed(cfg) -> Optional[int]:
    return int(cfg.RNG_SEED) if int(cfg.RNG_SEED) >= 0 else None


def build_detection_train_loader(cfg, dataset: Optional[DetectionDataset] = None, rank: Optional[int] = None,
                                 world_size: Optional[int] = None, start_iter: int = 0) -> DataLoader:
    """An endless DataLoader of training batches ``(list[Tensor[3,H,W]], list[target dict])``; use ``iter()``
    and ``next()``. Reads TRAIN.IMS_PER_BATCH (per process), DATA.NUM_WORKERS, DATA.ASPECT_RATIO_GROUPING,
    RNG_SEED (< 0: unseeded, the sampler seed drawn on rank 0 and shared). rank/world_size default to torch.distributed's (or 0/1).

    With a seed, every sample's augmentation is seeded from its position in the stream and ``start_iter``
    skips the batches already trained on, so a resumed run sees exactly the batches (augmentation included) of
    an uninterrupted one, whatever DATA.NUM_WORKERS."""
    if dataset is None:
        dataset = build_detection_dataset(cfg, is_train=True)
    rank, world_size = rank_and_world_size(rank, world_size)
    seed = _seed(cfg)
    base = int(seed) if seed is not None else shared_random_seed()  # one stream for all ranks: disjoint shards
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=base, rank=rank, world_size=world_size,
                              sample_seeds=seed is not None)
    batch_size = int(cfg.TRAIN.IMS_PER_BATCH)
    if cfg.DATA.ASPECT_RATIO_GROUPING:
        batch_sampler = GroupedBatchSampler(sampler, dataset.group_ids(), batch_size, drop_last=True)
    else:
        batch_sampler = BatchSampler(sampler, batch_size, drop_last=True)
    if start_iter:
        batch_sampler = SkipBatches(batch_sampler, start_iter)
    return _loader(dataset, batch_sampler, int(cfg.DATA.NUM_WORKERS), base + 7919 * rank)


def build_detection_test_loader(cfg, dataset: Optional[DetectionDataset] = None, rank: Optional[int] = None,
                                world_size: Optional[int] = None) -> DataLoader:
    """A DataLoader over this process's contiguous shard of the test set, in order, TEST.IMS_PER_BATCH images per
    batch ``(list[Tensor[3,H,W]], list[target dict])``; ``target['index']`` points into ``dataset.records``."""
    if dataset is None:
        dataset = build_detection_dataset(cfg, is_train=False)
    rank, world_size = rank_and_world_size(rank, world_size)
    sampler = InferenceSampler(len(dataset), rank=rank, world_size=world_size)
    batch_sampler = BatchSampler(sampler, int(cfg.TEST.IMS_PER_BATCH), drop_last=False)
    seed = _seed(cfg)
    return _loader(dataset, batch_sampler, int(cfg.DATA.NUM_WORKERS), (seed or 0) + 7919 * rank)


def _loader(dataset: DetectionDataset, batch_sampler, num_workers: int, seed: int) -> DataLoader:
    dataset.set_seed(seed)  # the main process's transform (num_workers=0); workers reseed in worker_init_fn
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_detection,
                      worker_init_fn=worker_init_fn if num_workers > 0 else None, generator=generator,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)
