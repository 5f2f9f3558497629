"""What the benchmarks and the GPU check share: timing medians, the machine's description, tables, JSON, and running
a tool in-process.

The scripts of dev/ import this module as a sibling (`import harness`: Python puts a script's own folder first on
sys.path); the tests import them the same way (tests/conftest.py). Standard library at import time: the GPU check
runs it before torch's extension is built, so torch is imported inside the functions that need it.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import os
import runpy
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")


# ------------------------------------------------------------------------------------------------ the package
def require_detection() -> None:
    """Exit 2 with one line saying to run `make setup` when the detection package cannot be imported (the tools'
    own check, tools/_setup_check.py)."""
    spec = importlib.util.spec_from_file_location("_setup_check", os.path.join(TOOLS, "_setup_check.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def run_script(path: str, argv: Sequence[str]) -> int:
    """Runs the script at `path` in this process as `python path *argv` would (its folder first on sys.path,
    sys.argv set, `__name__ == "__main__"`); returns its exit code. sys.path and sys.argv are restored."""
    saved_path, saved_argv = list(sys.path), list(sys.argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.argv = [path, *argv]
    try:
        runpy.run_path(path, run_name="__main__")
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    finally:
        sys.path[:], sys.argv[:] = saved_path, saved_argv


# ------------------------------------------------------------------------------------------------ timing
def synchronize(device) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(fn: Callable, device="cpu") -> Tuple[float, object]:
    """(seconds, result) of fn(); on CUDA the queued work is finished before and after."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def alternating(fns: Dict[str, Callable], repeats: int, warmup: int = 1, device="cpu") -> Dict[str, List[float]]:
    """Seconds of each of `fns`' `repeats` timed calls after `warmup` untimed rounds. The calls alternate and the
    order turns every round, so a busy machine slows every candidate alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            timed(fns[name], device)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(fns[name], device)[0])
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs (times: below 1 = ours faster); nan when theirs is 0."""
    return ours / theirs if theirs else float("nan")


# ------------------------------------------------------------------------------------------------ the machine
def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine(device="cpu") -> Dict[str, object]:
    """Versions and the hardware a measurement ran on: python, torch, torchvision, cores, threads, and for CUDA
    the device's name, capability, memory and CUDA version."""
    import torch
    import torchvision

    info: Dict[str, object] = {"date": datetime.date.today().isoformat(), "python": sys.version.split()[0],
                               "torch": torch.__version__, "torchvision": torchvision.__version__,
                               "cores": cores(), "threads": torch.get_num_threads()}
    if getattr(device, "type", device) == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(device)
        info.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2 ** 30, 1),
                    cuda=torch.version.cuda)
    else:
        info["device"] = "cpu"
    return info


def describe(info: Dict[str, object]) -> str:
    """One line for a table's caption, from machine()."""
    where = (f"CUDA {info['device']} (sm {info['capability']}, {info['memory_gib']} GiB, CUDA {info['cuda']})"
             if info.get("device") not in (None, "cpu") else f"CPU, {info['cores']} cores, {info['threads']} threads")
    return f"{info['date']}, {where}, torch {info['torch']}, torchvision {info['torchvision']}"


def require_cuda(prog: str, device) -> Optional[str]:
    """None when `device` is usable; otherwise the one-line error a benchmark prints before exiting 2."""
    import torch

    if getattr(device, "type", device) == "cuda" and not torch.cuda.is_available():
        return f"{prog} --device cuda: no CUDA device is visible"
    return None


# ------------------------------------------------------------------------------------------------ output
def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def markdown_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A Markdown table; `|` and newlines in cells are escaped."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """Columns aligned with spaces, for a terminal."""
    table = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)


def read_json(path: str) -> Optional[dict]:
    """The JSON object in `path`; None when the file is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
