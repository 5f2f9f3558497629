"""Run a pytest selection so that a crashing test (a segfault, an abort) is named and the other tests still run.

  python dev/gpu_tests.py --junit PATH [--workers 4] [--max-crashes 50] [-- PYTEST ARGS ...]

With pytest-xdist (on the GPU image): `pytest -n WORKERS --max-worker-restart ...`; a crashed worker is replaced
and its test reported failed ("worker 'gw0' crashed while running '<test>'"). Without it: pytest runs serially
with this module as a plugin that records each test's start and outcome (a JSON line each, flushed); after a crash
the test that started and never finished is recorded as crashed, and pytest runs again on the tests not run yet,
up to --max-crashes times. Either way one JUnit XML file results (in the fallback, written from the records), and
one line `GPU_CHECK_TESTS {json}` says the mode and the crashed tests. Exit code: 0 when every test passed or was
skipped, 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

from harness import ROOT

RECORD_ENV = "GPU_TESTS_RECORD"  # the plugin's record file
DONE_ENV = "GPU_TESTS_DONE"  # a file of node ids (one a line) the plugin deselects: they ran, or crashed
CRASHED = re.compile(r"worker '(\w+)' crashed\s+while\s+running\s+'([^']+)'", re.I)  # xdist's report (a JUnit error)
PYTEST_EXIT_CODES = range(0, 6)  # pytest's own: ok, tests failed, interrupted, internal error, usage, none collected


# ------------------------------------------------------------------------------------------------ the plugin
def _record(entry: dict) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def pytest_collection_modifyitems(session, config, items):
    path = os.environ.get(DONE_ENV)
    if not path or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        done = {line.strip() for line in f if line.strip()}
    keep = [item for item in items if item.nodeid not in done]  # exact ids: --deselect matches prefixes
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in done])
        items[:] = keep


def pytest_runtest_logstart(nodeid, location):
    _record({"start": nodeid})


def pytest_runtest_logfinish(nodeid, location):
    _record({"finish": nodeid})


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":  # setup / teardown only when they fail or skip
        message = ""
        if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[-1])
        elif report.outcome != "passed":
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash is not None else str(report.longrepr or "")
            message = (text.strip().splitlines() or [""])[0][:300]
        _record({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "message": message})


# ------------------------------------------------------------------------------------------------ the records
def read_records(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def outcomes(records: List[dict]) -> Dict[str, dict]:
    """{nodeid: {outcome: passed|failed|error|skipped, message}} of the tests that finished."""
    out: Dict[str, dict] = {}
    for r in records:
        if "nodeid" not in r:
            continue
        outcome = r["outcome"]
        if outcome == "failed" and r["when"] != "call":
            outcome = "error"
        previous = out.get(r["nodeid"])
        if previous is None or previous["outcome"] == "passed":
            out[r["nodeid"]] = {"outcome": outcome, "message": r["message"]}
    return out


def unfinished(records: List[dict]) -> Optional[str]:
    """The test that started last and has no outcome: the one a crash stopped."""
    finished = {r["finish"] for r in records if "finish" in r}
    started = [r["start"] for r in records if "start" in r]
    return started[-1] if started and started[-1] not in finished else None


def write_junit(path: str, results: Dict[str, dict]) -> None:
    """A JUnit XML file of {nodeid: {outcome, message}} (pytest's layout: classname = module path with dots)."""
    counts = {k: sum(1 for r in results.values() if r["outcome"] == v)
              for k, v in (("failures", "failed"), ("errors", "error"), ("skipped", "skipped"))}
    suite = ET.Element("testsuite", name="pytest", tests=str(len(results)), **{k: str(v) for k, v in counts.items()})
    for nodeid, r in results.items():
        module, _, name = nodeid.partition("::")
        case = ET.SubElement(suite, "testcase", classname=module[:-3].replace("/", ".") if module.endswith(".py")
                             else module, name=name or module)
        tag = {"failed": "failure", "error": "error", "skipped": "skipped"}.get(r["outcome"])
        if tag:
            ET.SubElement(case, tag, message=r["message"])
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


# ------------------------------------------------------------------------------------------------ the runs
def run_xdist(python: str, pytest_args: List[str], junit: str, workers: int, max_crashes: int) -> dict:
    cmd = [python, "-m", "pytest", "-n", str(workers), "--max-worker-restart", str(max_crashes),
           "-p", "no:cacheprovider", "--junitxml", junit, *pytest_args]
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    crashed = []
    if os.path.exists(junit):
        for case in ET.parse(junit).getroot().iter("testcase"):
            for child in case:
                m = CRASHED.search(child.get("message", "") + (child.text or ""))
                if m and m.group(2) not in crashed:
                    crashed.append(m.group(2))
    return {"mode": f"pytest-xdist -n {workers}", "exit_code": rc, "crashed": crashed, "runs": 1}


def run_serial(python: str, pytest_args: List[str], junit: str, max_crashes: int) -> dict:
    """pytest with this module as a plugin, again after every crash on the tests not run yet."""
    folder = tempfile.mkdtemp(prefix="gpu_tests_")
    record, done_file = os.path.join(folder, "record.jsonl"), os.path.join(folder, "done.txt")
    env = {**os.environ, RECORD_ENV: record, DONE_ENV: done_file,
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), ROOT]
                                         + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    crashed: Dict[str, int] = {}  # node id -> the exit code of the process it crashed
    runs, rc = 0, None
    try:
        while True:
            records = read_records(record)
            done = set(outcomes(records)) | set(crashed)
            with open(done_file, "w", encoding="utf-8") as f:
                f.write("".join(nodeid + "\n" for nodeid in sorted(done)))
            cmd = [python, "-m", "pytest", "-p", "gpu_tests", "-p", "no:cacheprovider", *pytest_args]
            print("$ " + " ".join(cmd) + (f"  ({len(done)} tests left out: already run)" if done else ""), flush=True)
            rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
            runs += 1
            if rc in PYTEST_EXIT_CODES:
                break
            stopped = unfinished(read_records(record))
            if stopped is None or stopped in crashed or len(crashed) >= max_crashes:
                break  # a crash outside a test, or too many: report what ran
            print(f"[gpu_tests] {stopped} crashed the process (exit code {rc}); running the rest again", flush=True)
            crashed[stopped] = rc
        results = outcomes(read_records(record))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for nodeid, code in crashed.items():
        results[nodeid] = {"outcome": "failed", "message": f"crashed the test process (exit code {code})"}
    write_junit(junit, results)
    return {"mode": "serial, pytest again after each crash (pytest-xdist is not installed)", "exit_code": rc,
            "crashed": list(crashed), "runs": runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpu_tests.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--junit", required=True, help="the JUnit XML file to write")
    p.add_argument("--workers", type=int, default=4, help="pytest-xdist workers (0: serial)")
    p.add_argument("--max-crashes", type=int, default=50, help="crashes tolerated before the rest is given up")
    p.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: -m cuda tests/)")
    args = p.parse_args(argv)
    pytest_args = args.pytest_args or ["-m", "cuda", os.path.join(ROOT, "tests")]
    xdist = args.workers > 0 and importlib.util.find_spec("xdist") is not None
    report = (run_xdist(sys.executable, pytest_args, args.junit, args.workers, args.max_crashes) if xdist
              else run_serial(sys.executable, pytest_args, args.junit, args.max_crashes))
    print("GPU_CHECK_TESTS " + json.dumps(report), flush=True)
    failed = report["crashed"] or report["exit_code"] not in (0, 5)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
