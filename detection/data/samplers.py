"""Samplers: an infinite, seeded, rank-sharded training stream; contiguous inference shards; aspect-ratio batches.

All take plain arguments (rank and world size included); ``build.py`` fills them from torch.distributed.
"""

from __future__ import annotations

import itertools
from typing import Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["TrainingSampler", "InferenceSampler", "GroupedBatchSampler"]


class TrainingSampler(Sampler):
    """An endless stream of indices in ``[0, size)``: a new permutation (or ``0..size-1`` without shuffle) each
    pass, the same on every process (same ``seed``), of which process ``rank`` takes every ``world_size``-th index
    starting at ``rank`` - a disjoint shard per process, as in detectron2. Repeatable for a fixed seed."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size={size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        self.size, self.shuffle, self.seed = int(size), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)

    def _infinite(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=g).tolist()
            else:
                yield from range(self.size)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._infinite(), self.rank, None, self.world_size)


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
            bucket = buckets.setdefault(int(self.group_ids[idx]), [])
            bucket.append(int(idx))
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
        counts = np.bincount(self.group_ids[np.fromiter(iter(self.sampler), dtype=np.int64)])
        full, rest = counts // self.batch_size, counts % self.batch_size
        return int(full.sum() + (0 if self.drop_last else np.count_nonzero(rest)))
