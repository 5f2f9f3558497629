"""The GPU check's runner: steps run one after another, each under its own timeout and all within one budget; a
step that fails, times out or crashes is recorded and the run goes on; the outputs are rewritten after every step.

A step is a list of commands (each in its own process group, killed whole on timeout) plus a parser that reads
their log and files into a Result. The steps themselves are in gpu_steps.py, their parsers in gpu_results.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from typing import Callable, Dict, List, Optional

from harness import ROOT, markdown_table

MIN_STEP_SECONDS = 15  # a step is skipped when less than this is left of the budget
OUT_FILES = ("summary.md", "results.json", "gpu_check.log", "artifacts.tar.gz")
ARTIFACT_SUFFIXES = (".json", ".jsonl", ".xml", ".txt", ".yaml", ".log")  # no checkpoints, images or events
KEPT = ("site", "synthetic")  # work folders a rerun on the same machine reuses (installed wheels, the dataset)
TABLE_STEPS = ("bench_ops", "bench_model", "batch_scaling", "launches")  # their Markdown tables end the summary


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
    """The run's arguments, folders and what the steps learnt (facts) and returned (results)."""

    def __init__(self, args, python: str):
        self.args = args
        self.python = python  # the steps run with this interpreter (gpu_check.sh: $PYTHON or python3)
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        self.wheels_dir = os.path.abspath(args.wheels)
        self.site = os.path.join(self.work, "site")
        self.facts: Dict[str, object] = {}
        self.results: Dict[str, Result] = {}

    def path(self, *parts) -> str:
        return os.path.join(self.work, *parts)

    def base_env(self) -> Dict[str, str]:
        """The steps' environment: the repository and the installed wheels on PYTHONPATH (the package is not
        pip-installed on the GPU machine), unbuffered output, no albumentations update check."""
        env = dict(os.environ)
        extra = [ROOT] + ([self.site] if os.path.isdir(self.site) else [])
        env["PYTHONPATH"] = os.pathsep.join(extra + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        return env


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


def read_log(ctx: Context, name: str) -> str:
    path = ctx.path("logs", name + ".log")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def run_step(ctx: Context, step: Step, deadline: float) -> Result:
    res = Result(step.name)
    left = deadline - time.monotonic()
    if left < MIN_STEP_SECONDS:
        res.summary = f"not run: {max(left, 0):.0f} s left of the {ctx.args.budget} s budget"
        return res
    timeout = min(step.timeout, left)
    start = time.monotonic()
    res.status = "ok"
    with open(ctx.path("logs", step.name + ".log"), "wb") as log:
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
    if step.parse is not None:
        try:
            step.parse(ctx, res, read_log(ctx, step.name))
        except Exception as exc:
            res.summary += f" (could not read the results: {exc!r})"
            res.status = "FAIL" if res.status == "ok" else res.status
    if res.status in ("TIMEOUT", "FAIL") and res.exit_code is not None:
        when = f" after {timeout:.0f} s" if res.status == "TIMEOUT" else ""
        res.summary = f"exit code {res.exit_code}{when}" + (f"; {res.summary}" if res.summary else "")
    return res


# ------------------------------------------------------------------------------------------------ outputs
def summary_markdown(ctx: Context, results: List[Result]) -> str:
    f = ctx.facts
    head = (f"GPU check, {time.strftime('%Y-%m-%d %H:%M')}: {f.get('device', '?')}, driver/smi "
            f"{f.get('nvidia_smi', '?')}, torch {f.get('torch', '?')}, torchvision {f.get('torchvision', '?')}")
    rows = [(r.name, r.status, f"{r.seconds:.0f}", r.summary) for r in results]
    return head + "\n\n" + markdown_table(("step", "status", "seconds", "result"), rows)


def bench_tables(ctx: Context) -> str:
    """The Markdown tables the benchmark steps printed (their logs), for summary.md and the end of the output."""
    out = []
    for name in TABLE_STEPS:
        lines = [ln for ln in read_log(ctx, name).splitlines() if ln.startswith("|")]
        if lines:
            out.append(f"{name}:\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def write_outputs(ctx: Context, results: List[Result], final: bool) -> None:
    """summary.md, results.json and gpu_check.log under --out; at the end also artifacts.tar.gz."""
    os.makedirs(ctx.out, exist_ok=True)
    tables = bench_tables(ctx)
    with open(os.path.join(ctx.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write((tables + "\n\n" if tables else "") + summary_markdown(ctx, results) + "\n")
    with open(os.path.join(ctx.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"facts": ctx.facts, "final": final, "steps": [dataclasses.asdict(r) for r in results]}, f,
                  indent=1, default=str)
    with open(os.path.join(ctx.out, "gpu_check.log"), "w", encoding="utf-8") as log:
        for r in results:
            log.write(f"\n===== {r.name}: {r.status}, {r.seconds:.0f} s: {r.summary}\n")
            log.write(read_log(ctx, r.name))
    if final:
        with tarfile.open(os.path.join(ctx.out, "artifacts.tar.gz"), "w:gz") as tar:
            for dirpath, _, files in os.walk(ctx.work):
                if dirpath.startswith((ctx.site, ctx.path("synthetic"), ctx.path("logs"))):  # logs: gpu_check.log
                    continue
                for name in files:
                    p = os.path.join(dirpath, name)
                    if name.endswith(ARTIFACT_SUFFIXES) and os.path.getsize(p) < 4e6:
                        tar.add(p, arcname=os.path.relpath(p, ctx.work))


# ------------------------------------------------------------------------------------------------ the run
def prepare_work_folder(ctx: Context) -> None:
    """A fresh work folder, but for what a rerun on the same machine can reuse (KEPT)."""
    os.makedirs(ctx.work, exist_ok=True)
    for name in os.listdir(ctx.work):
        if name not in KEPT:
            p = ctx.path(name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    os.makedirs(ctx.path("logs"))


def run_all(ctx: Context, chosen: List[Step]) -> int:
    """Runs the steps within ctx.args.budget seconds; exit code 0 when every step that ran passed, 130 when the
    run was stopped (SIGTERM, Ctrl-C): the outputs are written either way."""
    prepare_work_folder(ctx)
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
                print("    " + "\n    ".join(read_log(ctx, step.name).splitlines()[-25:]), flush=True)
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
