"""Host synchronisations and kernel launches per R50-FPN inference and per training step, ours and torchvision's
fasterrcnn_resnet50_fpn in the same run, counted with torch.profiler.

  python dev/profile_launches.py [--device cuda] [--size 800 1333] [--train-batch 2] [--iterations 3]
                                 [--json results.json]

Each model runs --iterations calls of each kind after two warm-up calls, all inside one profile; the counts are
per call. CUDA runtime calls: host synchronisations (cudaStreamSynchronize; cudaDeviceSynchronize and
cudaEventSynchronize beside it) and kernel launches (cudaLaunchKernel; cudaLaunchKernelExC and cuLaunchKernel,
which cuBLASLt and Triton use, beside it). On any device: the ATen calls that read a tensor's value on the host
(aten::_local_scalar_dense: `.item()`, `bool()`, `int()`; aten::nonzero: boolean masks, `torch.where` with one
argument), each a host synchronisation on CUDA - the part of the count the CPU can check. `.tolist()` of a CUDA
tensor shows as a device-to-host copy (cudaMemcpyAsync) and a cudaStreamSynchronize.

Target (listed under "failed", exit code 1): no more host synchronisations per inference than torchvision's.
"""
from __future__ import annotations

import argparse
import collections
import sys
from typing import Dict, Iterable, List

import harness

harness.require_detection()

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from host_syncs import HostSyncCounter  # noqa: E402
from model_pairs import build_fpn_pair, make_inputs  # noqa: E402

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
HOST_READS = ("aten::_local_scalar_dense", "aten::nonzero")
COPIES = ("cudaMemcpyAsync", "cudaMemcpy")
COUNTED = SYNCS + LAUNCHES + HOST_READS + COPIES


def count_calls(events: Iterable, calls: int) -> Dict[str, float]:
    """{name: count per call} of the COUNTED names among profiler events (objects with .key and .count, as
    key_averages() returns), plus the totals "syncs" and "launches"."""
    counts = collections.Counter()
    for e in events:
        if e.key in COUNTED:
            counts[e.key] += e.count
    out = {name: counts[name] / calls for name in COUNTED}
    out["syncs"] = sum(out[n] for n in SYNCS)
    out["launches"] = sum(out[n] for n in LAUNCHES)
    out["host_reads"] = sum(out[n] for n in HOST_READS)
    return out


def profile_calls(fn, iterations: int, device: torch.device) -> Dict[str, float]:
    """Counts per call of fn() over `iterations` profiled calls after two warm-up calls."""
    for _ in range(2):
        fn()
    harness.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            fn()
    counts = count_calls(prof.key_averages(), iterations)
    with HostSyncCounter() as counter:  # what would sync on CUDA, counted on any device (dev/host_syncs.py)
        fn()
    return {**counts, "host_syncs_proxy": counter.total}


def run(device: torch.device, height: int, width: int, train_batch: int, iterations: int) -> List[dict]:
    """Rows {model, what, counts...} for ours and torchvision's: one inference (batch 1) and one training step."""
    torch.manual_seed(0)
    ours, tv = build_fpn_pair(height, width)
    images, targets = make_inputs(max(train_batch, 1), height, width)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    rows = []
    for name, model in (("ours", ours.to(device)), ("torchvision", tv.to(device))):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)

        def inference():
            model.eval()
            with torch.no_grad():
                return model(images[:1])

        def train_step():
            model.train()
            losses = model(images[:train_batch], targets[:train_batch])
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()

        rows.append({"model": name, "what": "inference, 1 image", **profile_calls(inference, iterations, device)})
        rows.append({"model": name, "what": f"train step, {train_batch} image{'s' if train_batch > 1 else ''}",
                     **profile_calls(train_step, iterations, device)})
    return rows


def missed_targets(rows: List[dict]) -> List[str]:
    by = {(r["model"], r["what"]): r for r in rows}
    ours, tv = by.get(("ours", "inference, 1 image")), by.get(("torchvision", "inference, 1 image"))
    if ours and tv and ours["syncs"] > tv["syncs"]:
        return [f"host syncs per inference: ours {ours['syncs']:g} > torchvision {tv['syncs']:g}"]
    return []


def table(rows: List[dict]) -> str:
    return harness.markdown_table(
        ("model", "per call", "host syncs (cudaStreamSynchronize)", "kernel launches (cudaLaunchKernel)",
         "device-to-host copies", "host reads (_local_scalar_dense + nonzero)", "host syncs, CPU proxy"),
        [(r["model"], r["what"], f"{r['syncs']:g} ({r['cudaStreamSynchronize']:g})",
          f"{r['launches']:g} ({r['cudaLaunchKernel']:g})", f"{r['cudaMemcpyAsync'] + r['cudaMemcpy']:g}",
          f"{r['host_reads']:g}", f"{r['host_syncs_proxy']:g}") for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="profile_launches.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--size", nargs=2, type=int, default=[800, 1333], metavar=("H", "W"))
    p.add_argument("--train-batch", type=int, default=2, help="images per profiled training step")
    p.add_argument("--iterations", type=int, default=3, help="profiled calls of each kind (counts are per call)")
    p.add_argument("--json", default="", metavar="PATH", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.train_batch < 1 or args.iterations < 1:
        p.error("--train-batch and --iterations must be positive")
    error = harness.require_cuda("profile_launches.py", args.device)
    if error:
        print(error, file=sys.stderr)
        return 2
    device = torch.device(args.device)
    info = harness.machine(device)
    rows = run(device, args.size[0], args.size[1], args.train_batch, args.iterations)
    failed = missed_targets(rows)
    print(f"R50-FPN {args.size[0]}x{args.size[1]}, {harness.describe(info)}; torch.profiler counts per call over "
          f"{args.iterations} calls (CUDA runtime calls are 0 on the CPU)\n")
    print(table(rows))
    if failed:
        print("targets missed: " + "; ".join(failed))
    if args.json:
        harness.write_json(args.json, {"machine": info, "size": args.size, "rows": rows, "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
