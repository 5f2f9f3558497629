"""Samplers: an infinite, seeded, rank-sharded training stream; contiguous inference shards; aspect-ratio batches.

All take plain arguments (rank and world size included); ``build.py`` fills them from torch.distributed.
"""

from __future__ import annotations

import itertools
from typing import Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from detection.utils.seed import derive_seed

__all__ = ["TrainingSampler", "InferenceSampler", "GroupedBatchSampler", "SkipBatches", "sample_index",
           "apply_sample_key"]


def sample_index(key) -> int:
    """The dataset index of a sampler key: an int, or ``(index, seed)`` from a ``TrainingSampler`` with
    ``sample_seeds=True``."""
    return int(key[0]) if isinstance(key, tuple) else int(key)


def apply_sample_key(dataset, key) -> int:
    """For a dataset's ``__getitem__``: reseed ``dataset`` (its ``set_seed``) when ``key`` is ``(index, seed)``;
    returns the index."""
    if isinstance(key, tuple):
        dataset.set_seed(int(key[1]))
    return sample_index(key)


class TrainingSampler(Sampler):
    """An endless stream of indices in ``[0, size)``: a new permutation (or ``0..size-1`` without shuffle) each
    pass, the same on every process (same ``seed``), of which process ``rank`` takes every ``world_size``-th index
    starting at ``rank`` - a disjoint shard per process, as in detectron2. Repeatable for a fixed seed.

    sample_seeds: yield ``(index, seed)`` instead, the seed derived from ``seed`` and the position in the global
    stream, so a dataset can seed its augmentation per sample (``DetectionDataset`` does): the augmentation of
    the n-th sample is then the same whatever worker loads it and however the run was interrupted and resumed.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 sample_seeds: bool = False):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size={size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        self.size, self.shuffle, self.seed = int(size), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.sample_seeds = bool(sample_seeds)

    def _infinite(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=g).tolist()
            else:
                yield from range(self.size)

    def __iter__(self) -> Iterator:
        stream = itertools.islice(self._infinite(), self.rank, None, self.world_size)
        if not self.sample_seeds:
            return stream
        positions = itertools.count(self.rank, self.world_size)
        return ((idx, derive_seed(self.seed, 0x5EED, pos)) for idx, pos in zip(stream, positions))


class InferenceSampler(Sampler):
    """Indices ``[0, size)`` split into ``world_size`` contiguous shards (sizes differ by at most one, no padding
    and no duplicates, so every image is evaluated exactly once); process ``rank`` iterates its shard in order."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        per, extra = divmod(int(size), int(world_size))
        start = rank * per + min(rank, extra)
        self.indices = range(start, start + per + (1 if rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class GroupedBatchSampler(Sampler):
    """Batches of ``batch_size`` indices from ``sampler`` whose ``group_ids`` are equal (e.g. landscape vs
    portrait, see dataset.aspect_ratio_group_ids), in the order the groups fill up (py-faster-rcnn /
    detectron2 AspectRatioGroupedDataset). Works on infinite samplers; for a finite one the incomplete batch of
    each group is yielded at the end unless ``drop_last``.

    group_ids: int [len(dataset)], indexed by the sampler's indices.
    """

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int, drop_last: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)

    def __iter__(self) -> Iterator[List[int]]:
        buckets: dict = {}
        for idx in self.sampler:
            bucket = buckets.setdefault(int(self.group_ids[sample_index(idx)]), [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        if not self.drop_last:
            for g in sorted(buckets):
                if buckets[g]:
                    yield buckets[g]

    def __len__(self) -> int:
        if isinstance(self.sampler, TrainingSampler) or not hasattr(self.sampler, "__len__"):
            raise TypeError("GroupedBatchSampler over an infinite sampler has no length")
        counts = np.bincount(self.group_ids[np.fromiter((sample_index(i) for i in self.sampler), dtype=np.int64)])
        full, rest = counts // self.batch_size, counts % self.batch_size
        return int(full.sum() + (0 if self.drop_last else np.count_nonzero(rest)))


class SkipBatches(Sampler):
    """The batches of ``batch_sampler`` after the first ``count``: a resumed run at iteration ``count`` gets
    exactly the batches an uninterrupted run would have seen next (only indices are generated for the skipped
    ones, no image is read)."""

    def __init__(self, batch_sampler, count: int):
        if count < 0:
            raise ValueError(f"cannot skip a negative number of batches ({count})")
        self.batch_sampler, self.count = batch_sampler, int(count)

    def __iter__(self) -> Iterator[List]:
        return itertools.islice(iter(self.batch_sampler), self.count, None)
