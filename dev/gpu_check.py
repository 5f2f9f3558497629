#!/usr/bin/env python3
"""The whole GPU path in one time-boxed run (dev/gpu_check.sh calls this; see docs/benchmarks.md, "GPU check").

On a bare GPU machine with torch and torchvision installed, from the repository root:

  bash dev/gpu_check.sh [--out DIR] [--budget 480] [--steps a,b] [--skip a,b] [--iters 200] [--dry-run]

runs, each step under its own timeout and all within --budget seconds (later steps are skipped when it runs out):

  env            nvidia-smi, nvcc, torch / torchvision / CUDA versions, the device's compute capability, pytest-xdist
  wheels         pip-installs the carried wheels (.whl/, written here by dev/gpu_wheels.sh) that are not installed
                 at that version yet, into a private --target folder put on PYTHONPATH
  build          probes the toolchain (dev/gpu_toolchain.py: a C++ probe must need libstdc++.so, else the system
                 compilers build), builds detection._C with CUDA for the device's architecture in place, and checks
                 that every CUDA kernel is registered and that error messages with numbers arrive whole
  tests          pytest -m cuda tests/ through dev/gpu_tests.py: pytest-xdist -n 4, so a crash names its test and
                 the other tests still run (without xdist: serially, pytest again after each crash)
  data           the quick start's synthetic dataset (tools/make_synthetic_dataset.py)
  train_fp32     configs/quickstart.yaml for --iters iterations on CUDA: mAP@0.5, iterations/s, peak memory
  train_amp      the same with SOLVER.AMP True (target: mAP at most 0.02 below fp32's; its speed is reported, not
                 judged: the quick start is launch-bound)
  train_cascade_amp  the same with Cascade R-CNN heads (configs/quickstart_cascade.yaml's keys) under AMP: the three
                 stages train in float16 on CUDA (mAP@0.5, iterations/s, peak memory)
  torchrun       torchrun --nproc_per_node 1 training (DistributedDataParallel over nccl)
  bench_ops      dev/benchmark_ops.py --device cuda (ours vs torchvision's CUDA ops)
  bench_soft_nms dev/benchmark_soft_nms.py --device cuda (Soft-NMS against hard NMS, and the CUDA kernel against
                 the CPU one called from CUDA tensors: where it pays)
  batch_scaling  dev/benchmark_batch_scaling.py: R50-FPN 800x1333, batch 2 / 8 / 16, fp32 and AMP, training and
                 inference, img/s and peak memory vs torchvision (targets: AMP training at batch >= 8 no slower
                 than fp32, no row slower than torchvision)
  launches       dev/profile_launches.py: host syncs and kernel launches per R50-FPN inference and training step
  bench_model    dev/benchmark_model.py: VGG16 600x1000 fp32 and AMP; R50-FPN 800x1333 eager, fast=True, by stage

A failing step is reported and the run goes on. The output ends with the benchmarks' tables and a Markdown table
(step, status, seconds, result). Under --out (default $OUT, else outputs/gpu_check) it writes summary.md,
results.json, gpu_check.log (every step's full log) and artifacts.tar.gz (JUnit XML, metrics, benchmark JSON; no
checkpoints): four files, rewritten after every step so that a run killed at its limit still leaves them. Exit code
0 when every step that ran passed, 2 for bad arguments.

The modules: gpu_runner.py (the time-boxed runner), gpu_steps.py (the steps), gpu_results.py (their parsers).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

from gpu_runner import Context, Step, run_all
from gpu_steps import STEP_NAMES, steps
from harness import ROOT

DEFAULT_BUDGET = 480  # seconds: 8 minutes


def selected_steps(args) -> List[Step]:
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else STEP_NAMES
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()} if args.skip else set()
    unknown = [s for s in list(chosen) + sorted(skipped) if s not in STEP_NAMES]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEP_NAMES)}")
    return [s for s in steps() if s.name in chosen and s.name not in skipped]


def dry_run(ctx: Context, chosen: List[Step]) -> int:
    """Prints each step's timeout, environment and commands; runs nothing."""
    ctx.facts.setdefault("capability", "<device capability>")
    ctx.facts.setdefault("cores", "<device cores>")
    print(f"gpu_check dry run: budget {ctx.args.budget} s, outputs in {ctx.out}, work folder {ctx.work}, "
          f"wheels from {ctx.wheels_dir}")
    for step in chosen:
        print(f"\n[{step.name}] timeout {step.timeout} s" + "".join(f" {k}={v}" for k, v in step.env(ctx).items()))
        commands = step.commands(ctx)
        for cmd in commands:
            print("  $ " + " ".join(f"'<{a.count(chr(10))}-line script>'" if "\n" in a else a for a in cmd))
        if not commands:
            print("  (nothing to run now" + (f": no wheels in {ctx.wheels_dir})" if step.name == "wheels" else ")"))
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "outputs", "gpu_check"),
                   help="where summary.md, results.json, gpu_check.log and artifacts.tar.gz go ($OUT when set)")
    p.add_argument("--work", default="/tmp/gpu_check",
                   help="scratch folder (emptied first, but for the installed wheels and the dataset)")
    p.add_argument("--wheels", default=os.path.join(ROOT, ".whl"), help="carried wheels (default .whl/)")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="seconds for all steps (default 480)")
    p.add_argument("--steps", default="", help=f"comma-separated subset of: {','.join(STEP_NAMES)}")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out")
    p.add_argument("--iters", type=int, default=200,
                   help="training iterations of train_fp32 / train_amp / train_cascade_amp")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their commands, run nothing")
    args = p.parse_args(argv)
    if args.budget <= 0 or args.iters <= 0:
        p.error("--budget and --iters must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx = Context(args, python=sys.executable)
    try:
        chosen = selected_steps(args)
    except ValueError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    return dry_run(ctx, chosen) if args.dry_run else run_all(ctx, chosen)


if __name__ == "__main__":
    sys.exit(main())
