"""The GPU check's result parsers: each reads its step's log and files into Result.summary / status / data.

A parser may lower a step that ran to MISSED (a target missed) or FAIL (its results are missing or wrong); it
never raises a step that failed to ok. Targets: the CUDA tests all pass (none crashes); AMP is judged on R50-FPN
training at batch 8 and 16 (batch_scaling: at least as fast as fp32), the quick start only on its accuracy
(AMP mAP no more than 0.02 below fp32's: 200 iterations of a small model are launch-bound on a large GPU, so its
speed says nothing about AMP); the ops and the models no slower than torchvision's (the benchmarks' own targets).
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

from gpu_runner import Context, Result
from gpu_tests import CRASHED
from harness import read_json

AMP_MAP_TOLERANCE = 0.02  # AMP's quick-start mAP may be at most this much below fp32's


def json_line(log: str, tag: str) -> Optional[dict]:
    """The JSON object printed on the last line `TAG {...}` of a log."""
    found = re.findall(rf"^{tag} (\{{.*\}})$", log, re.M)
    return json.loads(found[-1]) if found else None


def parse_env(ctx: Context, res: Result, log: str) -> None:
    ctx.facts.update(json_line(log, "GPU_CHECK_ENV") or {})
    smi = re.search(r"^GPU_CHECK_SMI (.*)$", log, re.M)
    if smi:
        ctx.facts["nvidia_smi"] = smi.group(1).strip()
    nvcc = re.search(r"release ([\d.]+)", log)
    if nvcc:
        ctx.facts["nvcc"] = nvcc.group(1)
    f = ctx.facts
    res.data = dict(f)
    res.summary = (f"{f.get('device', 'no CUDA device')} (sm {f.get('capability', '?')}, {f.get('memory_gib', '?')} "
                   f"GiB), driver/smi: {f.get('nvidia_smi', '?')}; torch {f.get('torch', '?')} (CUDA "
                   f"{f.get('cuda_build', '?')}), torchvision {f.get('torchvision', '?')}, nvcc "
                   f"{f.get('nvcc', '?')}, python {f.get('python', '?')}, {f.get('cores', '?')} cores, pytest-xdist "
                   f"{f.get('xdist') or 'missing'}")
    if not f.get("cuda_available"):
        res.status = "FAIL"


def parse_wheels(ctx: Context, res: Result, log: str) -> None:
    f = ctx.facts
    if not f.get("wheels_found"):
        res.summary = f"no wheels in {ctx.wheels_dir} (run dev/gpu_wheels.sh where PyPI is reachable)"
        res.status = "SKIP" if res.status == "ok" else res.status
    else:
        names = f.get("wheels_installed") or []
        res.summary = (f"{len(names)} of {f['wheels_found']} carried wheels installed into {ctx.site}"
                       + (f" ({', '.join(n.split('-')[0] for n in names)})" if names else " (all present already)"))
    if f.get("wheel_problems"):
        res.summary += "; " + "; ".join(f["wheel_problems"])


def parse_build(ctx: Context, res: Result, log: str) -> None:
    toolchain = json_line(log, "GPU_CHECK_TOOLCHAIN")
    kernels = re.search(r"^GPU_CHECK_KERNELS (.*)$", log, re.M)
    res.data = {"toolchain": toolchain}
    arch = ctx.facts.get("capability", "<torch default>")
    res.summary = (f"{toolchain['summary'] if toolchain else 'no toolchain probe'}; TORCH_CUDA_ARCH_LIST={arch}: "
                   + (kernels.group(1) if kernels else "build failed (see the log)"))


def junit_counts(path: str) -> Dict[str, object]:
    """{tests, failures, errors, skipped, passed, test_ops_cuda, failed_names, crashed} from a JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c: Dict[str, object] = {k: sum(int(s.get(k, 0)) for s in suites)
                            for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    cases = list(root.iter("testcase"))
    c["test_ops_cuda"] = sum(1 for t in cases if "test_ops_cuda" in (t.get("classname") or ""))
    bad = [t for t in cases if t.find("failure") is not None or t.find("error") is not None]
    c["failed_names"] = [f"{t.get('classname')}.{t.get('name')}" for t in bad][:8]
    c["crashed"] = []
    for t in bad:
        child = t.find("failure") if t.find("failure") is not None else t.find("error")
        text = (child.get("message") or "") + (child.text or "")
        m = CRASHED.search(text)
        if m or "crashed the test process" in text:
            c["crashed"].append(m.group(2) if m else f"{t.get('classname')}.{t.get('name')}")
    return c


def parse_tests(ctx: Context, res: Result, log: str) -> None:
    run = json_line(log, "GPU_CHECK_TESTS") or {}
    path = ctx.path("junit.xml")
    try:
        c = junit_counts(path)
    except (OSError, ET.ParseError):
        res.summary = "no JUnit report (pytest did not finish)"
        res.status = "FAIL" if res.status == "ok" else res.status
        return
    res.data = {**c, "mode": run.get("mode"), "runs": run.get("runs")}
    res.summary = (f"{c['passed']} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped "
                   f"({c['test_ops_cuda']} from test_ops_cuda.py; {run.get('mode', 'mode unknown')})")
    if c["crashed"]:
        res.summary += f"; {len(c['crashed'])} CRASHED: " + ", ".join(c["crashed"][:8])
    others = [n for n in c["failed_names"] if not any(n.endswith(x.split("::")[-1]) for x in c["crashed"])]
    if others:
        res.summary += "; failing: " + ", ".join(others)
    if c["failures"] or c["errors"] or c["test_ops_cuda"] == 0 or c["passed"] == 0:
        res.status = "FAIL"


def parse_train(ctx: Context, res: Result, log: str) -> None:
    """The quick start on CUDA: mAP, iterations/s and peak memory; AMP judged on its mAP only."""
    probe = read_json(ctx.path(res.name + ".probe.json")) or {}
    metrics = read_json(ctx.path(res.name, "inference", "metrics.json")) or {}
    data = {"mAP": metrics.get("mAP"), "it_per_s": probe.get("it_per_s"),
            "peak_memory_mib": (probe.get("peak_memory_bytes") or 0) / 2 ** 20 or None,
            "iterations": probe.get("iterations")}
    res.data = data
    parts = [f"mAP@0.5 {data['mAP']:.3f}" if data["mAP"] is not None else "no mAP",
             f"{data['it_per_s']:.2f} it/s" if data["it_per_s"] else "no it/s",
             f"peak {data['peak_memory_mib']:.0f} MiB" if data["peak_memory_mib"] else "no peak memory"]
    res.summary = ", ".join(parts) + f" ({data['iterations']} iterations)"
    if res.status == "ok" and (data["mAP"] is None or not data["it_per_s"]):
        res.status = "FAIL"
    fp32 = ctx.results.get("train_fp32")
    if res.name == "train_amp" and fp32 is not None and fp32.data.get("mAP") is not None and data["mAP"] is not None:
        d_map = data["mAP"] - fp32.data["mAP"]
        speed = (f"{data['it_per_s'] / fp32.data['it_per_s']:.2f}x fp32's it/s (launch-bound: AMP is judged in "
                 f"batch_scaling), " if data["it_per_s"] and fp32.data.get("it_per_s") else "")
        data["mAP_delta"] = d_map
        res.summary += f"; {speed}mAP {d_map:+.3f} vs fp32 (target >= -{AMP_MAP_TOLERANCE})"
        if res.status == "ok" and d_map < -AMP_MAP_TOLERANCE:
            res.status = "MISSED"


def parse_torchrun(ctx: Context, res: Result, log: str) -> None:
    try:
        with open(ctx.path("torchrun", "log.txt"), encoding="utf-8", errors="replace") as f:
            log += f.read()
    except OSError:
        pass
    m = re.search(r"DistributedDataParallel over (\d+) process\(es\), backend (\w+)", log)
    res.summary = f"DDP over {m.group(1)} process, backend {m.group(2)}" if m else "no DDP line in the log"
    if res.status == "ok" and (m is None or m.group(2) != "nccl"):
        res.status = "FAIL"


def load_results(ctx: Context, res: Result, name: str) -> Optional[dict]:
    """The benchmark's JSON file `name` in the work folder, kept as res.data; None (and "no results", a FAIL for a
    step that seemed to pass) when it is missing."""
    data = read_json(ctx.path(name))
    if not data:
        res.summary = "no results"
        res.status = "FAIL" if res.status == "ok" else res.status
        return None
    res.data = data
    return data


def _missed_not_failed(res: Result, data: dict) -> None:
    """A benchmark exits 1 when a target is missed: that ran (MISSED), unless its results are missing."""
    if res.status == "FAIL" and res.exit_code == 1 and data.get("failed"):
        res.status = "MISSED"


def parse_bench_ops(ctx: Context, res: Result, log: str) -> None:
    data = load_results(ctx, res, "bench_ops.json")
    if data is None:
        return
    rows = [r for r in data["rows"] if r["device"] == "cuda"]
    ratios = [(float(r["ratio"]), r) for r in rows if r["ratio"] != "n/a"]
    worst = max(ratios, key=lambda x: x[0]) if ratios else None
    res.summary = f"{len(rows)} CUDA rows" + (
        f", worst ratio {worst[0]:.2f} ({worst[1]['op']}, {worst[1]['size']})" if worst else "")
    nms = [r for r in rows if r["op"] == "nms" and r["size"] == "12000 boxes"]
    if nms:
        res.summary += f", NMS 12000 boxes {nms[0]['ratio']}x (target <= 0.5)"
    if data.get("failed"):
        res.summary += "; missed or differing: " + ", ".join(" ".join(f) for f in data["failed"])
        if res.status == "FAIL" and all(r.get("ratio") != "n/a" and "DIFFER" not in r.get("target", "")
                                        for r in rows):
            res.status = "MISSED"


def parse_bench_model(ctx: Context, res: Result, log: str) -> None:
    """VGG16 at 600x1000 (fp32, AMP; target: AMP inference >= 40 img/s) and R50-FPN at 800x1333 (fp32, batch 1,
    eager and fast=True, and its time by stage)."""
    parts, missed, found = [], False, False
    for name in ("bench_model.json", "bench_model_fpn.json"):
        data = read_json(ctx.path(name))
        if not data:
            continue
        found = True
        res.data[name] = data
        for r in data["rows"]:
            inf, train = 1 / r["inf_ours"], 1 / r["train_ours"]
            fast = f"fast {1 / r['inf_fast']:.1f}; " if r.get("inf_fast") else ""
            parts.append(f"{r['backbone']} {r['precision']}: {inf:.1f} img/s ({fast}tv {1 / r['inf_tv']:.1f}), "
                         f"{train:.1f} it/s (tv {1 / r['train_tv']:.1f})")
            if r["backbone"] == "vgg16" and r["precision"] == "amp" and inf < 40:
                missed = True
                parts[-1] += " [target >= 40 img/s MISSED]"
            stages = r.get("stages_ours")
            if stages and r.get("stages_tv"):
                key = "predictor + post-processing"
                parts[-1] += (f"; {key} {stages[key] * 1e3:.1f} ms (tv {r['stages_tv'][key] * 1e3:.1f})")
    res.summary = "; ".join(parts) if found else "no results"
    if missed and res.status == "ok":
        res.status = "MISSED"


def parse_batch_scaling(ctx: Context, res: Result, log: str) -> None:
    """R50-FPN 800x1333 at batch 2, 8, 16: training img/s ours (torchvision) per precision, AMP's speed-up over
    fp32 at each batch, and the peak memory of training at the largest batch."""
    data = load_results(ctx, res, "batch_scaling.json")
    if data is None:
        return
    rows: List[dict] = data["rows"]
    parts = []
    for precision in ("fp32", "amp"):
        train = [r for r in rows if r["precision"] == precision and r["mode"] == "train"]
        if train:
            parts.append(f"train {precision} " + "/".join(f"b{r['batch']}" for r in train) + ": " + "/".join(
                f"{r['ours_img_s']:.1f}" if "ours_img_s" in r else "-" for r in train) + " img/s (tv " + "/".join(
                f"{r['tv_img_s']:.1f}" if "tv_img_s" in r else "-" for r in train) + ")")
    speed = data.get("amp_speedup", {})
    for mode in ("train", "inference"):
        if speed.get(mode):
            parts.append(f"AMP/fp32 {mode}: " + ", ".join(f"b{b} {s:.2f}x" for b, s in
                                                           sorted(speed[mode].items(), key=lambda x: int(x[0]))))
    largest = max((r for r in rows if r["mode"] == "train"), key=lambda r: r["batch"], default=None)
    if largest is not None:
        peaks = [r for r in rows if r["mode"] == "train" and r["batch"] == largest["batch"]]
        parts.append(f"train peak b{largest['batch']}: " + ", ".join(
            f"{r['precision']} {r['ours_peak_mib']:,.0f} MiB (tv {r['tv_peak_mib']:,.0f})" for r in peaks
            if r.get("ours_peak_mib") is not None and r.get("tv_peak_mib") is not None))
    res.summary = "; ".join(parts)
    if data.get("failed"):
        res.summary += "; missed: " + "; ".join(data["failed"])
    _missed_not_failed(res, data)


def parse_launches(ctx: Context, res: Result, log: str) -> None:
    """Host syncs and kernel launches per inference and per training step, ours (torchvision)."""
    data = load_results(ctx, res, "launches.json")
    if data is None:
        return
    by = {(r["model"], r["what"]): r for r in data["rows"]}
    parts = []
    for what in dict.fromkeys(r["what"] for r in data["rows"]):
        ours, tv = by.get(("ours", what)), by.get(("torchvision", what))
        if ours and tv:
            parts.append(f"{what}: syncs {ours['syncs']:g} (tv {tv['syncs']:g}), launches {ours['launches']:g} "
                         f"(tv {tv['launches']:g})")
    res.summary = "; ".join(parts) or "no rows"
    if data.get("failed"):
        res.summary += "; missed: " + "; ".join(data["failed"])
    _missed_not_failed(res, data)
