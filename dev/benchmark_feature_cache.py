#!/usr/bin/env python
r"""Epoch time of the classifier's head training with and without the frozen-feature cache.

    python dev/benchmark_feature_cache.py                                  # configs/quickstart_classifier.yaml
    python dev/benchmark_feature_cache.py --cfg configs/faces_mobilenet_v2.yaml --epochs 5 --json out.json

Without the cache, every epoch reads and resizes the training images and runs them through the frozen backbone
before the head's forward/backward. With it, the first epoch computes the features once (memory-mapped under a
temporary folder) and trains the head; later epochs train the head from the cache only. Both train the same head
on the same batches (TRAIN.IMS_PER_BATCH, len(train) // batch batches per epoch). Prints every epoch's time, the
medians (without cache; with cache, epochs after the first) and their ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import harness
from harness import ROOT

harness.require_detection()
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--cfg", default=os.path.join(ROOT, "configs", "quickstart_classifier.yaml"))
    p.add_argument("--set", nargs="+", default=[], metavar="KEY VALUE", help="config overrides")
    p.add_argument("--epochs", type=int, default=4, help="epochs timed each way (default 4)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def _train_epoch(model, optimizer, batches, n_batches: int) -> float:
    import torch

    t0 = time.perf_counter()
    for _ in range(n_batches):
        images, targets = next(batches)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return time.perf_counter() - t0


def main(argv=None) -> int:
    import torch

    from detection.config import load_config
    from detection.data.classification import (build_classification_dataset, build_classification_records,
                                               build_classification_train_loader)
    from detection.data.feature_cache import cached_batches
    from detection.engine.classification_task import ClassificationTask, feature_cache_decision
    from detection.engine.optim import build_optimizer
    from detection.utils.seed import seed_everything

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.cfg, args.set)
    cfg.DATA.NUM_WORKERS = 0  # the same single process for both: the time is the model's and the reading's
    task = ClassificationTask()
    try:
        records = build_classification_records(cfg, is_train=True)
    except FileNotFoundError as exc:
        print(f"error: {exc}\n(the quick-start data: python tools/make_synthetic_dataset.py --mode classification "
              f"--out datasets/synthetic_cls)", file=sys.stderr)
        return 2
    seed_everything(cfg.RNG_SEED)
    model = task.build_model(cfg)
    ok, why = feature_cache_decision(cfg, model)
    if not ok:
        print(f"error: this config cannot use the feature cache: {why}", file=sys.stderr)
        return 2
    batch = int(cfg.TRAIN.IMS_PER_BATCH)
    n_batches = max(1, len(records) // batch)
    s = cfg.SOLVER

    def optimizer_for(m):
        return build_optimizer(m.named_parameters(), s.OPTIMIZER, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY,
                               s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS)

    print(f"{cfg.MODEL.BACKBONE.NAME} frozen, input {cfg.CLS.IMAGE_SIZE}px, {len(records)} training images, "
          f"{n_batches} batches of {batch} per epoch, torch threads {torch.get_num_threads()}")
    # without the cache: images -> frozen backbone -> head, every epoch
    model.train()
    opt = optimizer_for(model)
    loader = iter(build_classification_train_loader(
        cfg, build_classification_dataset(cfg, is_train=True, records=records, augment=False)))
    plain = [_train_epoch(model, opt, loader, n_batches) for _ in range(args.epochs)]
    for i, t in enumerate(plain):
        print(f"  without cache, epoch {i + 1}: {t:.3f} s")
    # with the cache: epoch 1 computes the features (into a fresh folder), later epochs read them
    seed_everything(cfg.RNG_SEED)
    model = task.build_model(cfg)
    model.train()
    opt = optimizer_for(model)
    cached = []
    with tempfile.TemporaryDirectory(prefix="feature_cache_bench_") as tmp:
        cfg.OUTPUT_DIR = tmp
        t0 = time.perf_counter()
        cache = task.build_feature_cache(cfg, model, records, progress=False)
        build_s = time.perf_counter() - t0
        batches = cached_batches(cache, batch, int(cfg.RNG_SEED))
        for i in range(args.epochs):
            t = _train_epoch(model, opt, batches, n_batches)
            cached.append(t + (build_s if i == 0 else 0.0))
            print(f"  with cache, epoch {i + 1}: {cached[-1]:.4f} s" + (f" (feature caching {build_s:.3f} s)"
                                                                          if i == 0 else ""))
    later = cached[1:] or cached
    med_plain, med_cached = harness.median(plain), harness.median(later)
    ratio = med_plain / med_cached if med_cached > 0 else float("inf")
    print(f"median epoch without cache: {med_plain:.3f} s")
    print(f"median epoch with cache (epochs after the first): {med_cached:.4f} s")
    print(f"first epoch with cache (computing the features): {cached[0]:.3f} s")
    print(f"ratio: {ratio:.1f}x faster with the cache")
    if args.json:
        harness.write_json(args.json, dict(
            config=args.cfg, backbone=cfg.MODEL.BACKBONE.NAME, image_size=int(cfg.CLS.IMAGE_SIZE), images=len(records),
            batch=batch, batches_per_epoch=n_batches, threads=torch.get_num_threads(), epochs_without_cache=plain,
            epochs_with_cache=cached, median_without_cache=med_plain, median_with_cache_after_first=med_cached,
            first_epoch_with_cache=cached[0], ratio=ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
