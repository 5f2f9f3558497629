"""R50-FPN throughput and peak memory against batch size, ours against torchvision's fasterrcnn_resnet50_fpn in the
same run: what users run on a GPU, and where mixed precision is judged (the quick start is launch-bound).

  python dev/benchmark_batch_scaling.py [--device cuda] [--size 800 1333] [--batches 2 8 16] [--precision both]
                                        [--repeats 5] [--warmup 2] [--json results.json]

The pair is dev/model_pairs.py's build_fpn_pair (the same random weights, every torchvision default; images of
--size need no resize). For each precision (fp32; AMP: torch.autocast float16 on CUDA, bfloat16 on the CPU, with a
GradScaler in training), batch size and mode (inference: eval, no_grad, the whole batch in one call; training:
forward, backward and an SGD step), each model runs in its own block of --warmup + --repeats calls, the two blocks
in turn first, and CUDA's peak memory is reset before each block (both models stay resident: the peak includes
both models' weights). img/s = batch / median seconds; ratio = ours / torchvision seconds (below 1: ours faster).

Targets (listed under "failed" in the JSON, exit code 1): every row's ratio <= 1.0, and AMP training at least as
fast as fp32 training (ours) at each batch of 8 or more.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Dict, List

import harness

harness.require_detection()

import torch  # noqa: E402

from model_pairs import build_fpn_pair, make_inputs  # noqa: E402

AMP_JUDGED_FROM_BATCH = 8  # smaller batches are launch-bound on a large GPU: AMP cannot show there
MODES = ("inference", "train")


def amp_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


class Runner:
    """One model's inference call and training step on the first `batch` of the inputs, in one precision."""

    def __init__(self, model, images, targets, device, amp: bool):
        self.model, self.images, self.targets, self.device, self.amp = model, images, targets, device, amp
        self.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=amp_dtype(self.device)) if self.amp else contextlib.nullcontext()

    def inference(self, batch: int):
        self.model.eval()
        with torch.no_grad(), self.autocast():
            return self.model(self.images[:batch])

    def train(self, batch: int):
        self.model.train()
        with self.autocast():
            losses = self.model(self.images[:batch], self.targets[:batch])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(sum(losses.values())).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return losses


def measure_block(fn, repeats: int, warmup: int, device) -> Dict[str, object]:
    """{seconds: [repeats], peak_mib (CUDA)} of fn() after `warmup` untimed calls; {error} when it runs out of
    memory."""
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            harness.timed(fn, device)
        seconds = [harness.timed(fn, device)[0] for _ in range(repeats)]
    except torch.OutOfMemoryError as exc:
        return {"error": f"out of memory ({str(exc).splitlines()[0][:80]})"}
    return {"seconds": seconds, "peak_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None}


def run(device: torch.device, height: int, width: int, batches: List[int], precisions: List[str], repeats: int,
        warmup: int, log=print) -> List[dict]:
    """One row per (precision, mode, batch): ours and torchvision's medians, img/s, peak memory and the ratio."""
    torch.manual_seed(0)
    ours, tv = build_fpn_pair(height, width)
    ours, tv = ours.to(device), tv.to(device)
    images, targets = make_inputs(max(batches), height, width)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    rows, turn = [], 0
    for precision in precisions:
        runners = {name: Runner(model, images, targets, device, amp=precision == "amp")
                   for name, model in (("ours", ours), ("tv", tv))}
        for mode in MODES:
            for batch in batches:
                row = {"precision": precision, "mode": mode, "batch": batch}
                order = ("ours", "tv") if turn % 2 == 0 else ("tv", "ours")
                turn += 1
                for name in order:
                    fn = getattr(runners[name], mode)
                    block = measure_block(lambda: fn(batch), repeats, warmup, device)
                    if "error" in block:
                        row[f"{name}_error"] = block["error"]
                        continue
                    median = harness.median(block["seconds"])
                    row.update({f"{name}_s": median, f"{name}_img_s": batch / median, f"{name}_peak_mib":
                                block["peak_mib"]})
                if "ours_s" in row and "tv_s" in row:
                    row["ratio"] = harness.ratio(row["ours_s"], row["tv_s"])
                log(f"  {precision} {mode} batch {batch}: " + ", ".join(
                    f"{n} {row[n + '_img_s']:.1f} img/s" if n + "_s" in row else f"{n} {row[n + '_error']}"
                    for n in ("ours", "tv")))
                rows.append(row)
    return rows


def amp_speedups(rows: List[dict]) -> Dict[str, Dict[int, float]]:
    """{mode: {batch: ours' AMP img/s / ours' fp32 img/s}} where both ran."""
    by_key = {(r["precision"], r["mode"], r["batch"]): r for r in rows}
    out: Dict[str, Dict[int, float]] = {}
    for (precision, mode, batch), r in by_key.items():
        fp32 = by_key.get(("fp32", mode, batch))
        if precision == "amp" and fp32 and "ours_img_s" in r and "ours_img_s" in fp32:
            out.setdefault(mode, {})[batch] = r["ours_img_s"] / fp32["ours_img_s"]
    return out


def missed_targets(rows: List[dict], speedups: Dict[str, Dict[int, float]]) -> List[str]:
    """The targets this run missed, one phrase each."""
    failed = [f"{r['precision']} {r['mode']} batch {r['batch']}: "
              + (f"ratio {r['ratio']:.2f} > 1.0" if "ratio" in r else "did not run")
              for r in rows if "ratio" not in r or r["ratio"] > 1.0]
    failed += [f"AMP training batch {b}: {s:.2f}x fp32 < 1.0" for b, s in sorted(speedups.get("train", {}).items())
               if b >= AMP_JUDGED_FROM_BATCH and s < 1.0]
    return failed


def table(rows: List[dict]) -> str:
    def cell(r, name, key, fmt):
        return fmt.format(r[f"{name}_{key}"]) if r.get(f"{name}_{key}") is not None else r.get(f"{name}_error", "-")

    return harness.markdown_table(
        ("precision", "mode", "batch", "ours img/s", "torchvision img/s", "ratio", "ours peak MiB",
         "torchvision peak MiB"),
        [(r["precision"], r["mode"], r["batch"], cell(r, "ours", "img_s", "{:.1f}"), cell(r, "tv", "img_s", "{:.1f}"),
          f"{r['ratio']:.2f}" if "ratio" in r else "-", cell(r, "ours", "peak_mib", "{:,.0f}"),
          cell(r, "tv", "peak_mib", "{:,.0f}")) for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmark_batch_scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--size", nargs=2, type=int, default=[800, 1333], metavar=("H", "W"))
    p.add_argument("--batches", nargs="+", type=int, default=[2, 8, 16])
    p.add_argument("--precision", choices=("fp32", "amp", "both"), default="both")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per block (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first in each block")
    p.add_argument("--json", default="", metavar="PATH", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--batches and --repeats must be positive, --warmup not negative")
    error = harness.require_cuda("benchmark_batch_scaling.py", args.device)
    if error:
        print(error, file=sys.stderr)
        return 2
    device = torch.device(args.device)
    precisions = ["fp32", "amp"] if args.precision == "both" else [args.precision]
    info = harness.machine(device)
    rows = run(device, args.size[0], args.size[1], sorted(args.batches), precisions, args.repeats, args.warmup,
               log=lambda line: print(line, flush=True))
    speedups = amp_speedups(rows)
    failed = missed_targets(rows, speedups)
    print(f"\nR50-FPN {args.size[0]}x{args.size[1]}, {harness.describe(info)}; medians of {args.repeats} calls after "
          f"{args.warmup} warm-up; ratio = ours / torchvision seconds\n")
    print(table(rows))
    for mode, by_batch in speedups.items():
        print(f"AMP / fp32 img/s, ours, {mode}: "
              + ", ".join(f"batch {b} {s:.2f}x" for b, s in sorted(by_batch.items())))
    if failed:
        print("targets missed: " + "; ".join(failed))
    if args.json:
        harness.write_json(args.json, {"machine": info, "size": args.size, "rows": rows,
                                       "amp_speedup": speedups, "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
