"""Classification data: augmentation, the dataset and the loaders (the square resize is detection/ops/resize.py).

Training loader: image-folder records -> ``ClassificationDataset`` (read RGB -> optional albumentations
augmentation on the uint8 image -> float tensor -> ``resize_square`` to CLS.IMAGE_SIZE) -> seeded endless
``TrainingSampler`` (rank-sharded) -> TRAIN.IMS_PER_BATCH -> ``(list[Tensor[3,S,S]], list[target])``.
Test loader: the same without augmentation, in order (``InferenceSampler``), TEST.IMS_PER_BATCH.
A target is ``dict(label=int64 Tensor[], index=int into dataset.records, image_id=str)``.

The resize is the very function the classifier applies to images of other sizes (demo), so a test-loader image
and the same file given to the demo reach the backbone identical.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from detection.data.image_folder import ImageFolderRecords, load_image_folder
from detection.data.image_io import read_record_image
from detection.data.records import DatasetError
from detection.data.samplers import InferenceSampler, SkipBatches, TrainingSampler, apply_sample_key
from detection.ops.resize import CROP_FRACTION, resize_square, ten_crop  # noqa: F401  (re-exported)
from detection.utils.dist import rank_and_world_size, shared_random_seed
from detection.utils.seed import worker_init_fn

__all__ = [
    "CROP_FRACTION",
    "resize_square",
    "ten_crop",
    "ClassificationAugment",
    "ClassificationDataset",
    "collate_classification",
    "build_classification_records",
    "build_classification_dataset",
    "build_classification_train_loader",
    "build_classification_test_loader",
    "has_random_augmentation",
]

class ClassificationAugment:
    """Random augmentation of a uint8 [H, W, 3] RGB image with albumentations, before the resize: optional random
    crop of a fraction of the area (``crop_area``, image aspect kept), horizontal flip, colour jitter.
    An empty pipeline is the identity. ``set_seed`` reseeds it (the loader's worker_init_fn calls it)."""

    def __init__(self, hflip_prob: float = 0.0, color_jitter: float = 0.0, color_jitter_prob: float = 0.8,
                 crop_prob: float = 0.0, crop_area: Tuple[float, float] = (0.3, 1.0), seed: Optional[int] = None):
        import albumentations as A

        from detection.data.transforms import RandomAreaCrop

        ts = []
        if crop_prob > 0:
            ts.append(RandomAreaCrop(area_range=tuple(crop_area), p=crop_prob))
        if hflip_prob > 0:
            ts.append(A.HorizontalFlip(p=hflip_prob))
        if color_jitter > 0:
            ts.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                    hue=min(0.5, color_jitter / 4), p=color_jitter_prob))
        self.transforms = ts
        self.compose = A.Compose(ts) if ts else None
        self.set_seed(seed)

    @property
    def is_random(self) -> bool:
        return self.compose is not None

    def set_seed(self, seed: Optional[int]) -> None:
        if self.compose is not None:
            import random

            seed = None if seed is None else int(seed) % (2**32)
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.compose is None:
            return image
        return np.ascontiguousarray(self.compose(image=image)["image"])

    def __repr__(self):
        return f"ClassificationAugment({self.transforms})"


class ClassificationDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (image float32 Tensor[3, S, S] RGB 0..1, dict(label=int64 Tensor[], index, image_id))``;
    ``dataset[(i, seed)]`` reseeds the augmentation first (per-sample seeds: exact resume).

    records: image-folder records (path, label, image_id). augment: a ``ClassificationAugment`` (None = none).
    image_size / resize_mode: ``resize_square`` arguments (image_size None = no resize).
    skip_bad_images: an unreadable image is replaced by the next readable record with a warning (the target
    then names that record); otherwise ImageReadError naming the file is raised.
    """

    def __init__(self, records: Sequence[dict], class_names: Sequence[str], image_size: Optional[int] = 224,
                 resize_mode: str = "squash", augment: Optional[ClassificationAugment] = None,
                 skip_bad_images: bool = False, meta: Optional[dict] = None):
        self.records = list(records)
        self.class_names = tuple(class_names)
        self.image_size = None if image_size is None else int(image_size)
        self.resize_mode = resize_mode
        self.augment = augment
        self.skip_bad_images = bool(skip_bad_images)
        self.meta = dict(meta or {})
        self.labels = np.asarray([r["label"] for r in self.records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def set_seed(self, seed: int) -> None:
        if self.augment is not None:
            self.augment.set_seed(seed)

    def describe_transform(self) -> str:
        """What turns a file into the tensor (part of the feature-cache key)."""
        return f"resize_square(size={self.image_size}, mode={self.resize_mode}); augment={self.augment!r}"

    def _read(self, index: int):
        return read_record_image(self.records, index, self.skip_bad_images)

    def __getitem__(self, index):
        index, image = self._read(apply_sample_key(self, index))
        if self.augment is not None:
            image = self.augment(image)
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        if self.image_size is not None:
            img = resize_square(img, self.image_size, self.resize_mode).contiguous()
        rec = self.records[index]
        return img, dict(label=torch.tensor(int(rec["label"]), dtype=torch.int64), index=index,
                         image_id=rec["image_id"])


def collate_classification(batch):
    """[(image, target), ...] -> (list of images, list of targets)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def _sets(cfg, is_train: bool) -> List[str]:
    sets = cfg.DATA.TRAIN_SETS if is_train else cfg.DATA.TEST_SET
    sets = [sets] if isinstance(sets, str) else list(sets)
    if not sets:
        raise DatasetError(f"DATA.{'TRAIN_SETS' if is_train else 'TEST_SET'} is empty")
    return sets


def build_classification_records(cfg, is_train: bool) -> ImageFolderRecords:
    """Read DATA.TRAIN_SETS (joined) or DATA.TEST_SET: sub-folders of DATA.ROOT in the image-folder layout.

    Classes: DATA.CLASSES, or [] = the sorted folder names of the first set; every set must have the same list.
    MODEL.NUM_CLASSES > 0 must equal the number of classes."""
    data = cfg.DATA
    if data.FORMAT != "image_folder":
        raise DatasetError(f"the classifier reads DATA.FORMAT 'image_folder', got {data.FORMAT!r}")
    root = os.path.expanduser(data.ROOT)
    parts = []
    classes = tuple(data.CLASSES) or None
    for split in _sets(cfg, is_train):
        part = load_image_folder(root, split, classes, check_images=bool(data.CHECK_IMAGES),
                                 skip_bad_images=bool(data.SKIP_BAD_IMAGES),
                                 name=f"{root}/{split} ({'train' if is_train else 'test'})")
        if parts and part.class_names != parts[0].class_names:
            raise DatasetError(f"{root}/{split} has classes {list(part.class_names)}, {parts[0].meta['folder']} has "
                             f"{list(parts[0].class_names)}: set DATA.CLASSES or make the folders agree")
        classes = classes or part.class_names
        parts.append(part)
    n = int(cfg.MODEL.NUM_CLASSES)
    if n > 0 and n != len(parts[0].class_names):
        raise DatasetError(f"MODEL.NUM_CLASSES is {n} but {parts[0].meta['folder']} has {len(parts[0].class_names)} "
                         f"classes {list(parts[0].class_names)}")
    if len(parts) == 1:
        return parts[0]
    counts = {c: sum(p.counts.get(c, 0) for p in parts) for c in parts[0].class_names}
    return ImageFolderRecords([r for p in parts for r in p.records], parts[0].class_names, counts,
                              [s for p in parts for s in p.skipped], meta=dict(parts=[p.meta for p in parts]))


def build_augment(cfg, seed: Optional[int]) -> ClassificationAugment:
    """Training augmentation from TRAIN.USE_FLIPPED/AUG.HFLIP_PROB, AUG.COLOR_JITTER*, AUG.RANDOM_CROP*."""
    aug = cfg.AUG
    return ClassificationAugment(
        hflip_prob=float(aug.HFLIP_PROB) if cfg.TRAIN.USE_FLIPPED else 0.0,
        color_jitter=float(aug.COLOR_JITTER_STRENGTH) if aug.COLOR_JITTER else 0.0,
        crop_prob=float(aug.RANDOM_CROP_PROB) if aug.RANDOM_CROP else 0.0,
        crop_area=tuple(aug.RANDOM_CROP_SCALE), seed=seed)


def has_random_augmentation(cfg) -> bool:
    """True when the training pipeline has a random step (flip, colour jitter, crop)."""
    aug = cfg.AUG
    return bool((cfg.TRAIN.USE_FLIPPED and aug.HFLIP_PROB > 0) or (aug.COLOR_JITTER and aug.COLOR_JITTER_STRENGTH > 0)
                or (aug.RANDOM_CROP and aug.RANDOM_CROP_PROB > 0))


def _seed(cfg) -> Optional[int]:
    return int(cfg.RNG_SEED) if int(cfg.RNG_SEED) >= 0 else None


def build_classification_dataset(cfg, is_train: bool, records: Optional[ImageFolderRecords] = None,
                                 augment: Optional[bool] = None) -> ClassificationDataset:
    """ClassificationDataset over ``records`` (default: build_classification_records), resized to CLS.IMAGE_SIZE
    with CLS.RESIZE; augmented when ``augment`` (default: is_train). Bad images are skipped in training only
    when DATA.SKIP_BAD_IMAGES (a test set keeps or fails on every image it lists)."""
    if records is None:
        records = build_classification_records(cfg, is_train)
    augment = is_train if augment is None else augment
    aug = build_augment(cfg, _seed(cfg)) if augment else None
    return ClassificationDataset(
        records.records, records.class_names, image_size=int(cfg.CLS.IMAGE_SIZE), resize_mode=cfg.CLS.RESIZE,
        augment=aug if aug is not None and aug.is_random else None,
        skip_bad_images=bool(cfg.DATA.SKIP_BAD_IMAGES) and is_train, meta=records.meta)


def train_seed(cfg) -> int:
    """The training sampler's seed: RNG_SEED, or when it is negative a fresh one drawn on rank 0 and shared by
    every process (so their shards stay disjoint)."""
    seed = _seed(cfg)
    return int(seed) if seed is not None else shared_random_seed()


def _loader(dataset, batch_sampler, num_workers: int, seed: int) -> DataLoader:
    dataset.set_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                      collate_fn=collate_classification, worker_init_fn=worker_init_fn if num_workers > 0 else None,
                      generator=generator, pin_memory=torch.cuda.is_available())


def build_classification_train_loader(cfg, dataset: Optional[ClassificationDataset] = None,
                                      rank: Optional[int] = None, world_size: Optional[int] = None,
                                      start_iter: int = 0) -> DataLoader:
    """An endless DataLoader of ``(list[Tensor[3,S,S]], list[target])`` batches of TRAIN.IMS_PER_BATCH (per
    process), shuffled by a ``TrainingSampler`` seeded with RNG_SEED; with a seed, each sample's augmentation is
    seeded from its position in the stream, and the first ``start_iter`` batches are skipped (exact resume)."""
    if dataset is None:
        dataset = build_classification_dataset(cfg, is_train=True)
    rank, world_size = rank_and_world_size(rank, world_size)
    base = train_seed(cfg)
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=base, rank=rank, world_size=world_size,
                              sample_seeds=_seed(cfg) is not None and dataset.augment is not None)
    batch_sampler = BatchSampler(sampler, int(cfg.TRAIN.IMS_PER_BATCH), drop_last=True)
    if start_iter:
        batch_sampler = SkipBatches(batch_sampler, int(start_iter))
    return _loader(dataset, batch_sampler, int(cfg.DATA.NUM_WORKERS), base + 7919 * rank)


def build_classification_test_loader(cfg, dataset: Optional[ClassificationDataset] = None,
                                     rank: Optional[int] = None, world_size: Optional[int] = None,
                                     batch_size: Optional[int] = None) -> DataLoader:
    """This process's contiguous shard of the test set, in order, TEST.IMS_PER_BATCH images per batch."""
    if dataset is None:
        dataset = build_classification_dataset(cfg, is_train=False)
    rank, world_size = rank_and_world_size(rank, world_size)
    sampler = InferenceSampler(len(dataset), rank=rank, world_size=world_size)
    batch_sampler = BatchSampler(sampler, int(batch_size or cfg.TEST.IMS_PER_BATCH), drop_last=False)
    return _loader(dataset, batch_sampler, int(cfg.DATA.NUM_WORKERS), (_seed(cfg) or 0) + 7919 * rank)
