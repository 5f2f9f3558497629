"""Seeding: one call for random / numpy / torch, and helpers for DataLoader workers and per-rank streams.

torch is imported inside the functions, so ``detection.utils`` stays cheap to import.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["seed_everything", "derive_seed", "worker_init_fn", "seed_worker", "make_generator", "get_rng_states",
           "set_rng_states"]


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed seed in [0, 2**32) from ``seed`` and integer keys (rank, epoch, worker id ...).

    ``derive_seed(s, rank)`` gives each process its own stream; unlike ``s + rank``, neighbouring seeds and
    keys do not give overlapping streams.
    """
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *(int(k) for k in keys)])
               .generate_state(1, dtype=np.uint32)[0])


def seed_everything(seed: Optional[int] = None, deterministic: bool = False) -> int:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and every CUDA device); return the seed.

    seed: None or negative draws a fresh seed from the OS (and returns it, so it can be logged and reused).
    deterministic: also ask torch for deterministic algorithms (``torch.use_deterministic_algorithms(True,
        warn_only=True)``, cuDNN deterministic and no benchmark, ``CUBLAS_WORKSPACE_CONFIG``): slower, and
        ops without a deterministic implementation warn instead of failing.
    Sets ``PYTHONHASHSEED`` in the environment (takes effect in child processes only).
    """
    if seed is None or seed < 0:
        seed = (os.getpid() * 1_000_003 + int(time.time() * 1e6) + int.from_bytes(os.urandom(4), "little")) % 2**31
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)
    import torch

    torch.manual_seed(seed)  # seeds the CUDA generators too (lazily, without initialising CUDA)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=worker_init_fn)``: seed a worker from torch's per-worker seed (``base_seed +
    worker_id``, which follows the DataLoader's generator): python ``random``, numpy's global RNG and, when the
    dataset has ``set_seed``, its transform (albumentations' own RNG). Augmentations then differ between workers
    and epochs and repeat with the same seed. Also stops OpenCV from spawning threads per worker. Picklable."""
    import torch

    info = torch.utils.data.get_worker_info()
    seed = (int(info.seed) if info is not None else torch.initial_seed()) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    if info is not None and hasattr(info.dataset, "set_seed"):
        info.dataset.set_seed(seed)
    try:
        import cv2

        cv2.setNumThreads(0)
    except ImportError:  # opencv is optional for non-image datasets
        pass


seed_worker = worker_init_fn  # the name PyTorch's reproducibility notes use


def make_generator(seed: int):
    """A ``torch.Generator`` seeded with ``seed``, for ``DataLoader(generator=...)`` and samplers."""
    import torch

    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def get_rng_states() -> Dict[str, Any]:
    """Every RNG the training loop touches (torch, CUDA, numpy, Python), as weights_only-loadable values: what a
    checkpoint saves for an exact resume."""
    import torch

    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what get_rng_states returned."""
    import torch

    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
