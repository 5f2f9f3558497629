"""Rank and world size for code below the engine (data loaders, caches), which must not import detection.engine."""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def rank_and_world_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """(rank, world_size): the given values, else those of the initialised process group, else (0, 1)."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else int(rank),
                dist.get_world_size() if world_size is None else int(world_size))
    return (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))


def shared_random_seed() -> int:
    """A fresh random seed in [0, 2**31 - 1), drawn from torch's RNG on rank 0 and broadcast: every process gets
    the same one (a training sampler seeded per process would give the ranks overlapping shards)."""
    seed = [int(torch.randint(0, 2**31 - 1, ()).item())]
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(seed, src=0)
    return int(seed[0])
