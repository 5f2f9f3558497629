#!/usr/bin/env python
"""What class-wise Soft-NMS costs against the hard NMS it replaces, and where its CUDA kernel pays.

  python dev/benchmark_soft_nms.py [--device all|cpu|cuda] [--repeats 30] [--threads 1] [--json results.json]

Inputs: the RoI heads' post-processing as dev/benchmark_ops.py sets it up (RPN-like boxes clustered around objects
of a 600 x 1000 image, spread over categories), at a few sizes. On each device: `batched_nms` (hard), and
`batched_soft_nms` linear and gaussian (TEST.NMS 0.3, sigma 0.5, min score 0.001): medians of alternating calls,
and soft / hard. With CUDA, also the CPU kernel called from CUDA tensors (copy to the host, Soft-NMS, copy back):
the alternative a CPU-only implementation (mmcv's) leaves, so "CUDA / via CPU" below 1 is where the kernel pays.
torchvision has no Soft-NMS: the reference for its results is tests/test_ops_soft_nms.py (the authors' code).
"""
from __future__ import annotations

import argparse
import sys

import harness

harness.require_detection()

import torch  # noqa: E402

from benchmark_ops import rpn_like_boxes  # noqa: E402
from detection import ops  # noqa: E402

#: (boxes, categories): the quick start's post-processing (3 classes), VOC's (20), COCO's (80)
SIZES = [(300, 3), (2000, 20), (5000, 80)]
METHODS = ("linear", "gaussian")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", default=None, help="also write the medians to this JSON file")
    return p.parse_args(argv)


def inputs(n: int, categories: int, device) -> tuple:
    boxes, scores = rpn_like_boxes(n, seed=n)
    labels = torch.randint(0, categories, (n,), generator=torch.Generator().manual_seed(n))
    return boxes.to(device), scores.to(device), labels.to(device)


def soft(boxes, scores, labels, method):
    return ops.batched_soft_nms(boxes, scores, labels, method, 0.3, 0.5, 0.001)


def via_cpu(boxes, scores, labels, method):
    keep, kept = soft(boxes.cpu(), scores.cpu(), labels.cpu(), method)
    return keep.to(boxes.device), kept.to(boxes.device)


def measure(device: str, repeats: int) -> list:
    """Rows [device, size, name, median ms, ratio to hard, ratio to via-CPU (CUDA)]."""
    rows = []
    for n, categories in SIZES:
        boxes, scores, labels = inputs(n, categories, device)
        fns = {"hard": lambda: ops.batched_nms(boxes, scores, labels, 0.3)}
        for method in METHODS:
            fns[method] = lambda m=method: soft(boxes, scores, labels, m)
            if device == "cuda":
                fns[f"{method} via CPU"] = lambda m=method: via_cpu(boxes, scores, labels, m)
        if device == "cuda":  # the CUDA kernel keeps what the CPU kernel keeps
            for method in METHODS:
                a, b = soft(boxes, scores, labels, method), via_cpu(boxes, scores, labels, method)
                if not (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])):
                    raise SystemExit(f"CUDA and CPU Soft-NMS ({method}, {n} boxes) differ")
        times = harness.alternating(fns, repeats, warmup=3, device=device)
        med = {k: harness.median(v) * 1e3 for k, v in times.items()}
        size = f"{n} boxes, {categories} classes"
        for name, ms in med.items():
            if name == "hard" or name.endswith("via CPU"):
                continue
            row = [device, size, name, f"{ms:.3f}", f"{med['hard']:.3f}", f"{ms / med['hard']:.2f}x"]
            if device == "cuda":
                row += [f"{med[name + ' via CPU']:.3f}", f"{ms / med[name + ' via CPU']:.2f}x"]
            rows.append(row)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if args.device == "all" and not torch.cuda.is_available():
        devices = ["cpu"]
    for device in devices:
        error = harness.require_cuda("benchmark_soft_nms.py", device)
        if error:
            print(error, file=sys.stderr)
            return 2
    results = {}
    for device in devices:
        header = ["device", "inputs", "Soft-NMS", "ms", "hard NMS ms", "soft / hard"]
        if device == "cuda":
            header += ["via CPU ms", "CUDA / via CPU"]
        rows = measure(device, args.repeats)
        print(harness.describe(harness.machine(device)))
        print(harness.markdown_table(header, rows) + "\n")
        results[device] = {"machine": harness.machine(device), "header": header, "rows": rows}
    if args.json:
        harness.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
