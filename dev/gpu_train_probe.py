#!/usr/bin/env python3
"""tools/train_net.py in this process, timing every training iteration and reading CUDA's peak memory.

  python dev/gpu_train_probe.py RESULT.json -- <tools/train_net.py arguments>

Writes {exit_code, iterations, warmup_iterations, it_per_s (after the first 10 of more than 20 iterations),
train_seconds, peak_memory_bytes (CUDA's max_memory_allocated during Trainer.train), step_seconds} and exits with
train_net's exit code. Used by the GPU check's training steps (dev/gpu_steps.py).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List

import harness

TRAIN_NET = os.path.join(harness.TOOLS, "train_net.py")


def train_probe(out_json: str, argv: List[str]) -> int:
    """Runs tools/train_net.py with `argv`, as a script in this process, with Trainer.run_step and Trainer.train
    wrapped; writes out_json."""
    import torch

    from detection.engine import trainer as trainer_mod

    times: List[float] = []
    info: Dict[str, object] = {}
    run_step_fn, train_fn = trainer_mod.Trainer.run_step, trainer_mod.Trainer.train

    def timed_step(self, iteration):
        t0 = time.perf_counter()
        values = run_step_fn(self, iteration)  # ends with float() of the losses: the GPU work is done
        times.append(time.perf_counter() - t0)
        return values

    def measured_train(self, start_iter=0):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            return train_fn(self, start_iter)
        finally:
            info["train_seconds"] = time.perf_counter() - t0
            if torch.cuda.is_available():
                info["peak_memory_bytes"] = torch.cuda.max_memory_allocated()

    trainer_mod.Trainer.run_step, trainer_mod.Trainer.train = timed_step, measured_train
    try:
        code = harness.run_script(TRAIN_NET, argv)
    finally:
        trainer_mod.Trainer.run_step, trainer_mod.Trainer.train = run_step_fn, train_fn
    warm = 10 if len(times) > 20 else 0  # cudnn autotuning, allocator growth
    steady = times[warm:]
    info.update(exit_code=code, iterations=len(times), warmup_iterations=warm,
                it_per_s=len(steady) / sum(steady) if steady and sum(steady) > 0 else None, step_seconds=times)
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return code


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):
        print("usage: gpu_train_probe.py RESULT.json -- <tools/train_net.py arguments>", file=sys.stderr)
        return 2
    rest = argv[1:]
    return train_probe(argv[0], rest[1:] if rest[:1] == ["--"] else rest)


if __name__ == "__main__":
    sys.exit(main())
