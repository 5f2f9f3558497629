#!/usr/bin/env python3
"""The whole GPU path in one time-boxed run (tools/gpu_check.sh calls this; see docs/benchmarks.md, "GPU check").

On a bare GPU machine with torch and torchvision installed, from the repository root:

  bash tools/gpu_check.sh [--out DIR] [--budget 480] [--steps a,b] [--skip a,b] [--iters 200] [--dry-run]

runs, each step under its own timeout and all within --budget seconds (later steps are skipped when it runs out):

  env          nvidia-smi, nvcc, torch / torchvision / CUDA versions, the device's compute capability
  wheels       pip-installs the carried wheels (.whl/, written here by tools/gpu_wheels.sh) that are not
               installed at that version yet, into a private --target folder put on PYTHONPATH
  build        detection._C with CUDA for the device's architecture (MAX_JOBS = its cores), in place
  tests        pytest -m cuda tests/ (tests/test_ops_cuda.py and every test marked `cuda`)
  data         the quick start's synthetic dataset (tools/make_synthetic_dataset.py)
  train_fp32   configs/quickstart.yaml for --iters iterations on CUDA: mAP@0.5, iterations/s, peak memory
  train_amp    the same with SOLVER.AMP True (targets: >= 1.5x the float32 iterations/s, mAP within 0.02)
  torchrun     torchrun --nproc_per_node 1 training (DistributedDataParallel over nccl)
  bench_ops    tools/benchmark_ops.py --device cuda (ours vs torchvision's CUDA ops)
  bench_model  tools/benchmark_model.py --device cuda: VGG16 and ResNet-50 C4 at 600x1000, fp32 and AMP

A failing step is reported and the run goes on. The output ends with a Markdown table (step, status, seconds,
result). Under --out (default $OUT, else outputs/gpu_check) it writes summary.md, results.json, gpu_check.log (every
step's full log) and artifacts.tar.gz (JUnit XML, metrics, benchmark JSON; no checkpoints): four files, rewritten
after every step so that a run killed at its limit still leaves them. Exit code 0 when every step that ran passed.

The wheels come from tools/gpu_wheels.sh (run where PyPI is reachable); the training steps time iterations with
tools/gpu_train_probe.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

from gpu_wheels import find_wheels, wheels_to_install  # noqa: E402
from quickstart import DATASET_FLAGS  # noqa: E402  (the dataset the quick-start configs expect)

DEFAULT_BUDGET = 480  # seconds: the 8 minutes
MIN_STEP_SECONDS = 15  # a step is skipped when less than this is left of the budget
OUT_FILES = ("summary.md", "results.json", "gpu_check.log", "artifacts.tar.gz")
ARTIFACT_SUFFIXES = (".json", ".jsonl", ".xml", ".txt", ".yaml", ".log")  # no checkpoints, images or events
KEPT = ("site", "synthetic")  # work folders a rerun on the same machine reuses (installed wheels, the dataset)


# ------------------------------------------------------------------------------------------------ the table
def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ steps
@dataclasses.dataclass
class Result:
    name: str
    status: str = "SKIP"  # ok, MISSED (ran; a target missed), FAIL, TIMEOUT, SKIP, INTERRUPTED
    seconds: float = 0.0
    summary: str = ""
    data: dict = dataclasses.field(default_factory=dict)
    exit_code: Optional[int] = None  # of the first command that failed


@dataclasses.dataclass
class Step:
    name: str
    timeout: int
    commands: Callable[["Context"], List[List[str]]]
    env: Callable[["Context"], Dict[str, str]] = lambda ctx: {}
    parse: Optional[Callable[["Context", Result, str], None]] = None  # fills result.summary / status / data


class Context:
    def __init__(self, args):
        self.args = args
        self.python = sys.executable  # the steps run with this interpreter (gpu_check.sh: $PYTHON or python3)
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        self.wheels_dir = os.path.abspath(args.wheels)
        self.site = os.path.join(self.work, "site")
        self.facts: Dict[str, object] = {}
        self.results: Dict[str, Result] = {}

    def path(self, *parts) -> str:
        return os.path.join(self.work, *parts)

    def base_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        extra = [ROOT] + ([self.site] if os.path.isdir(self.site) else [])
        env["PYTHONPATH"] = os.pathsep.join(extra + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
                   PYTHONDONTWRITEBYTECODE="1")
        return env


ENV_PROBE = r"""
import json, os, torch, torchvision
info = {"python": __import__("sys").version.split()[0], "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cores": len(os.sched_getaffinity(0))}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, capability="%d.%d" % (p.major, p.minor), memory_gib=round(p.total_memory / 2**30, 1))
print("GPU_CHECK_ENV " + json.dumps(info))
"""

KERNEL_PROBE = r"""
import torch, detection.ops as ops
missing = [n for n in ("nms", "roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
           if not torch._C._dispatch_has_kernel_for_dispatch_key("detection::" + n, "CUDA")]
print("GPU_CHECK_KERNELS", "missing: " + ",".join(missing) if missing else "all CUDA kernels registered")
raise SystemExit(1 if missing else 0)
"""


def cuda_home() -> Optional[str]:
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def parse_env(ctx: Context, res: Result, log: str) -> None:
    m = re.search(r"^GPU_CHECK_ENV (\{.*\})$", log, re.M)
    if m:
        ctx.facts.update(json.loads(m.group(1)))
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
                   f"{f.get('nvcc', '?')}, python {f.get('python', '?')}, {f.get('cores', '?')} cores")
    if not f.get("cuda_available"):
        res.status = "FAIL"


def wheel_commands(ctx: Context) -> List[List[str]]:
    wheels, problems = find_wheels(ctx.wheels_dir)
    ctx.facts["wheel_problems"] = problems
    todo = wheels_to_install(wheels)
    ctx.facts["wheels_found"], ctx.facts["wheels_installed"] = len(wheels), [os.path.basename(p) for p in todo]
    if not todo:
        return []
    return [[ctx.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
             "--upgrade", "--target", ctx.site, *todo]]


def parse_wheels(ctx: Context, res: Result, log: str) -> None:
    f = ctx.facts
    if not f.get("wheels_found"):
        res.summary = f"no wheels in {ctx.wheels_dir} (run tools/gpu_wheels.sh where PyPI is reachable)"
        res.status = "SKIP" if not os.path.isdir(ctx.wheels_dir) else res.status
    else:
        names = f.get("wheels_installed") or []
        res.summary = (f"{len(names)} of {f['wheels_found']} carried wheels installed into {ctx.site}"
                       + (f" ({', '.join(n.split('-')[0] for n in names)})" if names else " (all present already)"))
    if f.get("wheel_problems"):
        res.summary += "; " + "; ".join(f["wheel_problems"])


def build_env(ctx: Context) -> Dict[str, str]:
    env = {"FORCE_CUDA": "1", "MAX_JOBS": str(ctx.facts.get("cores") or os.cpu_count() or 4)}
    if ctx.facts.get("capability"):
        env["TORCH_CUDA_ARCH_LIST"] = str(ctx.facts["capability"])
    home = cuda_home()
    if home:
        env["CUDA_HOME"] = home
    return env


def parse_build(ctx: Context, res: Result, log: str) -> None:
    m = re.search(r"^GPU_CHECK_KERNELS (.*)$", log, re.M)
    env = build_env(ctx)
    res.summary = (f"TORCH_CUDA_ARCH_LIST={env.get('TORCH_CUDA_ARCH_LIST', '<torch default>')} "
                   f"MAX_JOBS={env['MAX_JOBS']}: " + (m.group(1) if m else "build failed (see the log)"))


def junit_counts(path: str) -> Dict[str, int]:
    """{tests, failures, errors, skipped, passed, test_ops_cuda} from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    c["test_ops_cuda"] = sum(1 for t in root.iter("testcase") if "test_ops_cuda" in (t.get("classname") or ""))
    c["failed_names"] = [f"{t.get('classname')}.{t.get('name')}" for t in root.iter("testcase")
                         if t.find("failure") is not None or t.find("error") is not None][:8]
    return c


def parse_tests(ctx: Context, res: Result, log: str) -> None:
    path = ctx.path("junit.xml")
    if not os.path.exists(path):
        res.summary = "no JUnit report (pytest did not finish)"
        res.status = "FAIL" if res.status == "ok" else res.status
        return
    c = junit_counts(path)
    res.data = c
    res.summary = (f"{c['passed']} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped "
                   f"({c['test_ops_cuda']} from test_ops_cuda.py)")
    if c["failed_names"]:
        res.summary += "; failing: " + ", ".join(c["failed_names"])
    if c["failures"] or c["errors"] or c["test_ops_cuda"] == 0 or c["passed"] == 0:
        res.status = "FAIL"


def train_args(ctx: Context, name: str, iters: int, *extra: str) -> List[str]:
    return ["--cfg", os.path.join(ROOT, "configs", "quickstart.yaml"), "--no-progress",
            "--set", "DEVICE", "cuda", "SOLVER.MAX_ITER", str(iters), "DATA.ROOT", ctx.path("synthetic"),
            "OUTPUT_DIR", ctx.path(name), *extra]


def train_step_commands(name: str, *extra: str) -> Callable[[Context], List[List[str]]]:
    def commands(ctx: Context) -> List[List[str]]:
        return [[ctx.python, os.path.join(TOOLS, "gpu_train_probe.py"), ctx.path(name + ".probe.json"), "--",
                 *train_args(ctx, name, ctx.args.iters, *extra)]]
    return commands


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def parse_train(ctx: Context, res: Result, log: str) -> None:
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
    if res.name == "train_amp" and fp32 is not None and fp32.data.get("it_per_s") and data["it_per_s"]:
        speedup = data["it_per_s"] / fp32.data["it_per_s"]
        d_map = (data["mAP"] or 0.0) - (fp32.data.get("mAP") or 0.0)
        data.update(speedup=speedup, mAP_delta=d_map)
        res.summary += f"; vs fp32: {speedup:.2f}x it/s (target >= 1.5), mAP {d_map:+.3f} (target within 0.02)"
        if res.status == "ok" and (speedup < 1.5 or abs(d_map) > 0.02):
            res.status = "MISSED"


def torchrun_commands(ctx: Context) -> List[List[str]]:
    return [[ctx.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
             os.path.join(TOOLS, "train_net.py"), *train_args(ctx, "torchrun", 20), "--skip-eval"]]


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


def parse_bench_ops(ctx: Context, res: Result, log: str) -> None:
    data = read_json(ctx.path("bench_ops.json"))
    if not data:
        res.summary = "no results"
        return
    res.data = data
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
        if res.status == "FAIL":
            res.status = "MISSED" if all(r.get("ratio") != "n/a" for r in rows) and not any(
                "DIFFER" in r.get("target", "") for r in rows) else "FAIL"


def parse_bench_model(ctx: Context, res: Result, log: str) -> None:
    data = read_json(ctx.path("bench_model.json"))
    if not data:
        res.summary = "no results"
        return
    res.data = data
    parts, missed = [], False
    for r in data["rows"]:
        inf, train = 1 / r["inf_ours"], 1 / r["train_ours"]
        parts.append(f"{r['backbone']} {r['precision']}: {inf:.1f} img/s (tv {1 / r['inf_tv']:.1f}), "
                     f"{train:.1f} it/s (tv {1 / r['train_tv']:.1f})")
        if r["backbone"] == "vgg16" and r["precision"] == "amp" and inf < 40:
            missed = True
            parts[-1] += " [target >= 40 img/s MISSED]"
    res.summary = "; ".join(parts)
    if missed and res.status == "ok":
        res.status = "MISSED"


def steps() -> List[Step]:
    return [
        Step("env", 60, lambda ctx: [
            ["bash", "-c", "echo GPU_CHECK_SMI $(nvidia-smi --query-gpu=name,driver_version,memory.total "
                           "--format=csv,noheader 2>&1 | head -1); nvidia-smi 2>&1 | head -20; "
                           "(nvcc --version || \"${CUDA_HOME:-/usr/local/cuda}/bin/nvcc\" --version) 2>&1 | tail -2; "
                           "true"],
            [ctx.python, "-c", ENV_PROBE]], parse=parse_env),
        Step("wheels", 120, wheel_commands, parse=parse_wheels),
        Step("build", 420, lambda ctx: [[ctx.python, "setup.py", "build_ext", "--inplace"],
                                        [ctx.python, "-c", KERNEL_PROBE]], env=build_env, parse=parse_build),
        Step("tests", 300, lambda ctx: [[ctx.python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                                         "--junitxml", ctx.path("junit.xml"), os.path.join(ROOT, "tests")]],
             parse=parse_tests),
        Step("data", 120, lambda ctx: [[ctx.python, os.path.join(TOOLS, "make_synthetic_dataset.py"), "--out",
                                        ctx.path("synthetic"), *DATASET_FLAGS]]),
        Step("train_fp32", 240, train_step_commands("train_fp32"), parse=parse_train),
        Step("train_amp", 240, train_step_commands("train_amp", "SOLVER.AMP", "True"), parse=parse_train),
        Step("torchrun", 180, torchrun_commands, parse=parse_torchrun),
        Step("bench_ops", 180, lambda ctx: [[ctx.python, os.path.join(TOOLS, "benchmark_ops.py"), "--device", "cuda",
                                             "--repeats", "50", "--markdown", "--json", ctx.path("bench_ops.json")]],
             parse=parse_bench_ops),
        Step("bench_model", 300, lambda ctx: [[ctx.python, os.path.join(TOOLS, "benchmark_model.py"), "--device",
                                               "cuda", "--backbones", "vgg16", "resnet50", "--size", "600", "1000",
                                               "--precision", "both", "--repeats", "10", "--warmup", "3",
                                               "--json", ctx.path("bench_model.json")]],
             parse=parse_bench_model),
    ]


STEP_NAMES = [s.name for s in steps()]


# ------------------------------------------------------------------------------------------------ running
class Interrupted(Exception):
    pass


def run_command(cmd: List[str], env: Dict[str, str], log, timeout: float) -> int:
    """Runs cmd in its own process group (killed whole on timeout); returns its exit code, 124 on timeout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=os.setpgrp)
    try:
        return proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        log.write(f"\n[gpu_check] timed out after {timeout:.0f} s: killing the process group\n".encode())
        return_code = 124
    except BaseException:
        return_code = None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            break
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
    if return_code is None:
        raise Interrupted()
    return return_code


def run_step(ctx: Context, step: Step, deadline: float) -> Result:
    res = Result(step.name)
    left = deadline - time.monotonic()
    if left < MIN_STEP_SECONDS:
        res.summary = f"not run: {max(left, 0):.0f} s left of the {ctx.args.budget} s budget"
        return res
    timeout = min(step.timeout, left)
    log_path = ctx.path("logs", step.name + ".log")
    start = time.monotonic()
    res.status = "ok"
    with open(log_path, "wb") as log:
        env = ctx.base_env()
        env.update(step.env(ctx))
        try:
            commands = step.commands(ctx)
        except Exception as exc:  # a bug in a step's setup must not stop the others
            commands = []
            res.status, res.summary = "FAIL", f"could not prepare the step: {exc!r}"
        for cmd in commands:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            rc = run_command(cmd, env, log, timeout - (time.monotonic() - start))
            if rc != 0:
                res.status = "TIMEOUT" if rc == 124 else "FAIL"
                res.exit_code = rc
                break
    res.seconds = time.monotonic() - start
    text = open(log_path, encoding="utf-8", errors="replace").read()
    if step.parse is not None:
        try:
            step.parse(ctx, res, text)
        except Exception as exc:
            res.summary += f" (could not read the results: {exc!r})"
            res.status = "FAIL" if res.status == "ok" else res.status
    if res.status in ("TIMEOUT", "FAIL") and res.exit_code is not None:
        when = f" after {timeout:.0f} s" if res.status == "TIMEOUT" else ""
        res.summary = f"exit code {res.exit_code}{when}" + (f"; {res.summary}" if res.summary else "")
    return res


def summary_markdown(ctx: Context, results: List[Result]) -> str:
    f = ctx.facts
    head = (f"GPU check, {time.strftime('%Y-%m-%d %H:%M')}: {f.get('device', '?')}, driver/smi "
            f"{f.get('nvidia_smi', '?')}, torch {f.get('torch', '?')}, torchvision {f.get('torchvision', '?')}")
    rows = [(r.name, r.status, f"{r.seconds:.0f}", r.summary) for r in results]
    return head + "\n\n" + markdown_table(("step", "status", "seconds", "result"), rows)


def bench_tables(ctx: Context) -> str:
    """The Markdown tables the benchmark steps printed (their logs), for summary.md and the end of the output."""
    out = []
    for name in ("bench_ops", "bench_model"):
        path = ctx.path("logs", name + ".log")
        if os.path.exists(path):
            lines = [ln for ln in open(path, encoding="utf-8", errors="replace").read().splitlines()
                     if ln.startswith("|")]
            if lines:
                out.append(f"{name}:\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def write_outputs(ctx: Context, results: List[Result], final: bool) -> None:
    os.makedirs(ctx.out, exist_ok=True)
    tables = bench_tables(ctx)
    with open(os.path.join(ctx.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write((tables + "\n\n" if tables else "") + summary_markdown(ctx, results) + "\n")
    with open(os.path.join(ctx.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"facts": ctx.facts, "final": final, "steps": [dataclasses.asdict(r) for r in results]}, f,
                  indent=1, default=str)
    with open(os.path.join(ctx.out, "gpu_check.log"), "w", encoding="utf-8") as log:
        for r in results:
            path = ctx.path("logs", r.name + ".log")
            log.write(f"\n===== {r.name}: {r.status}, {r.seconds:.0f} s: {r.summary}\n")
            if os.path.exists(path):
                log.write(open(path, encoding="utf-8", errors="replace").read())
    if final:
        with tarfile.open(os.path.join(ctx.out, "artifacts.tar.gz"), "w:gz") as tar:
            for dirpath, _, files in os.walk(ctx.work):
                if dirpath.startswith((ctx.site, ctx.path("synthetic"), ctx.path("logs"))):  # logs: gpu_check.log
                    continue
                for name in files:
                    p = os.path.join(dirpath, name)
                    if name.endswith(ARTIFACT_SUFFIXES) and os.path.getsize(p) < 4e6:
                        tar.add(p, arcname=os.path.relpath(p, ctx.work))


def selected_steps(args) -> List[Step]:
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else STEP_NAMES
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()} if args.skip else set()
    unknown = [s for s in list(chosen) + sorted(skipped) if s not in STEP_NAMES]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEP_NAMES)}")
    return [s for s in steps() if s.name in chosen and s.name not in skipped]


def dry_run(ctx: Context, chosen: List[Step]) -> int:
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


def run_all(ctx: Context, chosen: List[Step]) -> int:
    os.makedirs(ctx.work, exist_ok=True)
    for name in os.listdir(ctx.work):  # a fresh work folder, but for what a rerun can reuse
        if name not in KEPT:
            p = ctx.path(name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    os.makedirs(ctx.path("logs"))
    deadline = time.monotonic() + ctx.args.budget
    results: List[Result] = []

    def on_term(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _run_steps(ctx, chosen, deadline, results)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_steps(ctx: Context, chosen: List[Step], deadline: float, results: List[Result]) -> int:
    print(f"gpu_check: {len(chosen)} steps within {ctx.args.budget} s; logs and results in {ctx.out}", flush=True)
    try:
        for step in chosen:
            print(f"[gpu_check] {step.name} ...", flush=True)
            try:
                res = run_step(ctx, step, deadline)
            except (Interrupted, KeyboardInterrupt):
                results.append(Result(step.name, "INTERRUPTED", summary="the run was stopped during this step"))
                raise
            ctx.results[step.name] = res
            results.append(res)
            print(f"[gpu_check] {step.name}: {res.status} in {res.seconds:.0f} s: {res.summary}", flush=True)
            if res.status in ("FAIL", "TIMEOUT"):
                tail = open(ctx.path("logs", step.name + ".log"), encoding="utf-8", errors="replace").read()
                print("    " + "\n    ".join(tail.splitlines()[-25:]), flush=True)
            write_outputs(ctx, results, final=False)
    except (Interrupted, KeyboardInterrupt):
        write_outputs(ctx, results, final=True)
        print(summary_markdown(ctx, results))
        return 130
    write_outputs(ctx, results, final=True)
    tables = bench_tables(ctx)
    if tables:
        print("\n" + tables)
    print("\n" + summary_markdown(ctx, results))
    return 0 if all(r.status in ("ok", "SKIP") for r in results) else 1


# ------------------------------------------------------------------------------------------------ command line
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
    p.add_argument("--iters", type=int, default=200, help="training iterations of train_fp32 / train_amp")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their commands, run nothing")
    args = p.parse_args(argv)
    if args.budget <= 0 or args.iters <= 0:
        p.error("--budget and --iters must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx = Context(args)
    try:
        chosen = selected_steps(args)
    except ValueError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    return dry_run(ctx, chosen) if args.dry_run else run_all(ctx, chosen)


if __name__ == "__main__":
    sys.exit(main())
