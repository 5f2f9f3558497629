"""Frozen-feature caching: compute a frozen backbone's features of a dataset once, train the head from them.

Layout under ``<OUTPUT_DIR>/feature_cache/``::

    <name>-<key[:16]>/features.npy   float32 [N, C]   (memory-mapped when read)
                      labels.npy     int64   [N]      (the label of the record each row was computed from)
                      meta.json      key, its parts, N, C; written last (a folder without it is incomplete)

The key is the sha256 of (a) the weights: every tensor of the frozen feature extractor, (b) the image list:
path, label, size and modification time of every file, (c) the transform: resize and normalisation. Changing
any of them gives another folder, so a stale cache is never read; other ``<name>-*`` folders are removed once the
new one is complete. A folder is written as ``.tmp`` and renamed, so an interrupted run leaves nothing that
looks complete.

``cached_batches`` yields training batches in exactly the order ``build_classification_train_loader`` would
(same seeded TrainingSampler and BatchSampler), as lists of 1-D feature tensors the classifier accepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader
from tqdm import tqdm

from detection.data.samplers import SkipBatches, TrainingSampler
from detection.utils.atomic_dir import atomic_directory

logger = logging.getLogger(__name__)

__all__ = ["module_fingerprint", "records_fingerprint", "cache_key", "FeatureCache", "build_feature_cache",
           "cached_batches"]


def module_fingerprint(module: torch.nn.Module, exclude: Sequence[str] = ()) -> str:
    """sha256 of every state-dict tensor (name, dtype, shape, bytes) of ``module``, keys starting with one of
    ``exclude`` left out."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if any(name.startswith(e) for e in exclude) or not torch.is_tensor(t):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def records_fingerprint(records: Sequence[dict]) -> str:
    """sha256 of the image list: path, label, file size and mtime of every record, in order."""
    h = hashlib.sha256()
    for r in records:
        try:
            st = os.stat(r["path"])
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{r['path']}|{r['label']}|{stamp}\n".encode())
    return h.hexdigest()


def cache_key(weights: str, images: str, transform: str) -> str:
    """The cache key of the three fingerprints."""
    return hashlib.sha256(f"weights={weights}\nimages={images}\ntransform={transform}".encode()).hexdigest()


class FeatureCache:
    """A complete cache folder: ``features`` (read-only memmap float32 [N, C]), ``labels`` int64 [N], ``meta``;
    ``built`` says whether this process computed it (False = it was found on disk)."""

    def __init__(self, folder: str, built: bool = False):
        with open(os.path.join(folder, "meta.json")) as f:
            self.meta = json.load(f)
        self.folder = folder
        self.features = np.load(os.path.join(folder, "features.npy"), mmap_mode="r")
        self.labels = np.load(os.path.join(folder, "labels.npy"))
        self.built = built
        if self.features.shape[0] != self.labels.shape[0]:
            raise ValueError(f"feature cache {folder} is inconsistent: {self.features.shape[0]} feature rows, "
                             f"{self.labels.shape[0]} labels (delete the folder)")

    @property
    def key(self) -> str:
        return self.meta["key"]

    def __len__(self) -> int:
        return int(self.features.shape[0])


def _complete(folder: str, key: str) -> bool:
    meta = os.path.join(folder, "meta.json")
    if not os.path.isfile(meta):
        return False
    try:
        with open(meta) as f:
            return json.load(f).get("key") == key
    except (OSError, ValueError):
        return False


@torch.no_grad()
def _compute(folder: str, dataset, extract, feature_dim: int, batch_size: int, num_workers: int,
             device: torch.device, progress: bool, desc: str) -> None:
    from detection.data.classification import collate_classification

    n = len(dataset)
    features = np.lib.format.open_memmap(os.path.join(folder, "features.npy"), mode="w+", dtype=np.float32,
                                         shape=(n, feature_dim))
    labels = np.empty(n, dtype=np.int64)
    # its own generator: iterating a DataLoader draws a seed, which must not come from (and shift) the global RNG
    # that the head's dropout uses - training from the cache then matches training through the frozen trunk
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_classification, generator=torch.Generator().manual_seed(0))
    start = 0
    for images, targets in tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
        f = extract([img.to(device, non_blocking=True) for img in images]).float().cpu().numpy()
        if f.shape[1] != feature_dim:
            raise ValueError(f"the feature extractor gave {f.shape[1]} channels, expected {feature_dim}")
        features[start:start + len(images)] = f
        labels[start:start + len(images)] = [int(t["label"]) for t in targets]
        start += len(images)
    features.flush()
    del features
    np.save(os.path.join(folder, "labels.npy"), labels)


def build_feature_cache(root: str, name: str, dataset, model, key_parts: dict, batch_size: int = 32,
                        num_workers: int = 0, progress: bool = True) -> FeatureCache:
    """The cache of ``model.extract_features`` over ``dataset`` (deterministic: no augmentation), computed once.

    root: the feature_cache folder. name: a label for the folder (e.g. 'train'). model: an ImageClassifier (uses
    extract_features, feature_dim, the device of its parameters; run in eval mode, restored after).
    key_parts: dict(weights=..., images=..., transform=...) fingerprints (see cache_key).
    Returns the loaded cache; an existing complete folder with the same key is reused without computing.
    """
    key = cache_key(key_parts["weights"], key_parts["images"], key_parts["transform"])
    folder = os.path.join(root, f"{name}-{key[:16]}")
    if _complete(folder, key):
        logger.info("feature cache %s: reusing %s", name, folder)
        return FeatureCache(folder, built=False)
    os.makedirs(root, exist_ok=True)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    try:
        with atomic_directory(folder) as tmp:
            _compute(tmp, dataset, model.extract_features, int(model.feature_dim), batch_size, num_workers, device,
                     progress, f"caching {name} features")
            meta = dict(key=key, parts=key_parts, name=name, num_images=len(dataset),
                        feature_dim=int(model.feature_dim), seconds=round(time.perf_counter() - t0, 3),
                        created=time.strftime("%Y-%m-%d %H:%M:%S"))
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f, indent=2)
    finally:
        model.train(was_training)
    for entry in os.listdir(root):  # stale caches of the same name (other weights, images or transform)
        path = os.path.join(root, entry)
        if entry.startswith(f"{name}-") and path != folder and ".tmp-" not in entry and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("feature cache %s: removed stale %s", name, path)
    logger.info("feature cache %s: %d x %d features in %.1f s -> %s", name, len(dataset), model.feature_dim,
                time.perf_counter() - t0, folder)
    return FeatureCache(folder, built=True)


def cached_batches(cache: FeatureCache, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                   start_iter: int = 0) -> Iterator[Tuple[List[torch.Tensor], List[dict]]]:
    """Endless training batches from the cache: ``([Tensor[C]] * B, [dict(label=int64 Tensor[], index)] * B)``,
    in the order of a seeded TrainingSampler + BatchSampler(drop_last=True) (as the image loader), the first
    ``start_iter`` batches skipped (a resumed run continues the same sequence)."""
    sampler = TrainingSampler(len(cache), shuffle=True, seed=seed, rank=rank, world_size=world_size)
    labels = torch.from_numpy(cache.labels)
    batches = SkipBatches(BatchSampler(sampler, int(batch_size), drop_last=True), int(start_iter))
    for idx in batches:
        idx_np = np.asarray(idx, dtype=np.int64)
        feats = torch.from_numpy(np.ascontiguousarray(cache.features[idx_np]))
        yield list(feats.unbind(0)), [dict(label=lab, index=i) for lab, i in zip(labels[idx_np].unbind(0), idx)]
