"""Build detection._C under the extension's libstdc++ rule, choosing the toolchain before anything is compiled.

  python dev/gpu_toolchain.py [--probe] [-- BUILD COMMAND ...]

1. Links a tiny C++ shared object with the environment's toolchain, the way setup.py links (distutils' compiler
   from CC, CXX, LDSHARED, LDFLAGS, ...), and reads its ELF NEEDED entries (detection/ops/_elf_check.py).
2. When that object carries its own libstdc++ (e.g. `CC=/opt/gcc/bin/gcc`, a wrapper that links it statically),
   probes the system toolchain (CC=/usr/bin/gcc CXX=/usr/bin/g++ LDSHARED="/usr/bin/g++ -shared", static flags
   dropped) and builds with it: compiling and linking with the system compilers, not only relinking.
3. Runs the build command (default: `<this python> setup.py build_ext --inplace`) with the chosen environment;
   setup.py checks the module it links once more.

Prints one line `GPU_CHECK_TOOLCHAIN {json}` (each probe's compiler, NEEDED entries and verdict; the variables set).
Exit code: the build's; 1 when no toolchain links libstdc++ dynamically. `--probe` probes this environment only
and prints its result as JSON.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

from harness import ROOT


def load_elf_check():
    """detection/ops/_elf_check.py by its path (the package is not built yet)."""
    spec = importlib.util.spec_from_file_location("_elf_check", os.path.join(ROOT, "detection", "ops", "_elf_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_here() -> Dict[str, object]:
    """Compiles and links the probe source with distutils' compiler configured from this process's environment:
    {cxx, needed, shared_libstdcxx} or {cxx, error}."""
    import setuptools  # noqa: F401  (provides distutils on Python >= 3.12)
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    elf = load_elf_check()
    compiler = new_compiler()
    customize_compiler(compiler)
    result: Dict[str, object] = {"cxx": " ".join(compiler.compiler_cxx[:1])}
    with tempfile.TemporaryDirectory(prefix="toolchain_probe_") as tmp:
        source = os.path.join(tmp, "probe.cpp")
        with open(source, "w", encoding="utf-8") as f:
            f.write(elf.PROBE_SOURCE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fPIC"])
            library = os.path.join(tmp, "probe.so")
            compiler.link_shared_object(objects, library, target_lang="c++")
            needed = elf.needed_libraries(library)
        except Exception as exc:  # CompileError, LinkError, OSError, NotELFError: this toolchain cannot be used
            result["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
            return result
    result.update(needed=needed, shared_libstdcxx=elf.links_shared_libstdcxx(needed))
    return result


def probe(env: Dict[str, str]) -> Dict[str, object]:
    """probe_here() in a child process with environment `env` (distutils reads its settings once per process)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe"], env=env, capture_output=True,
                          text=True, timeout=300)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": f"the probe failed (exit code {proc.returncode}): "
                         + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}


def choose(environ: Dict[str, str], run_probe=probe) -> Dict[str, object]:
    """{probes: [...], overrides: {variables to set}, ok}: the environment's toolchain when it links libstdc++
    dynamically, else the system toolchain when that does."""
    elf = load_elf_check()
    first = dict(run_probe(dict(environ)), toolchain="environment")
    report: Dict[str, object] = {"probes": [first], "overrides": {}, "ok": bool(first.get("shared_libstdcxx"))}
    if not report["ok"]:
        overrides = elf.system_toolchain_environment(environ)
        second = dict(run_probe({**environ, **overrides}), toolchain="system")
        report["probes"].append(second)
        if second.get("shared_libstdcxx"):
            report.update(overrides=overrides, ok=True)
    return report


def describe(report: Dict[str, object]) -> str:
    """One phrase for the GPU check's table."""
    parts = []
    for p in report["probes"]:
        what = (f"error: {p['error']}" if "error" in p else
                "links libstdc++.so" if p.get("shared_libstdcxx") else "links libstdc++ STATICALLY")
        parts.append(f"{p['toolchain']} toolchain ({p.get('cxx', '?')}) {what}")
    chosen = ("building with " + " ".join(f"{k}={v!r}" for k, v in report["overrides"].items() if k in
                                          ("CC", "CXX", "LDSHARED")) if report["overrides"] else
              "building with it" if report["ok"] else "no toolchain links libstdc++ dynamically: not building")
    return "; ".join(parts) + "; " + chosen


def main(argv: List[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe_here()))
        return 0
    command = argv[1:] if argv[:1] == ["--"] else argv
    command = command or [sys.executable, "setup.py", "build_ext", "--inplace"]
    report = choose(dict(os.environ))
    report["summary"] = describe(report)
    print("GPU_CHECK_TOOLCHAIN " + json.dumps(report), flush=True)
    if not report["ok"]:
        print(f"gpu_toolchain: {report['summary']}", file=sys.stderr)
        return 1
    return subprocess.run(command, cwd=ROOT, env={**os.environ, **report["overrides"]}).returncode


if __name__ == "__main__":
    sys.exit(main())
