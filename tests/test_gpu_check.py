"""The GPU check (dev/gpu_check.py and its modules gpu_runner, gpu_steps, gpu_results, gpu_toolchain, gpu_tests),
dev/gpu_wheels.py and dev/gpu_train_probe.py on the CPU: argument parsing, the wheel folder, the steps' commands
(dry run), the runner's timeouts / budget / outputs with stand-in steps, the result parsers, the toolchain rule, the
crash-tolerant test runner on crashing stand-in tests, and one real probed training run on the CPU."""
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

import gpu_check
import gpu_results
import gpu_runner
import gpu_steps
import gpu_tests
import gpu_toolchain
import gpu_train_probe
import gpu_wheels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for n in names:
        open(os.path.join(folder, n), "w").close()


# ------------------------------------------------------------------------------------------------ arguments
def test_defaults_and_out_from_the_device_environment(monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    args = gpu_check.parse_args([])
    assert args.budget == 480 and args.iters == 200 and not args.dry_run
    assert args.out == os.path.join(ROOT, "outputs", "gpu_check") and args.wheels == os.path.join(ROOT, ".whl")
    monkeypatch.setenv("OUT", "/device/out")
    assert gpu_check.parse_args([]).out == "/device/out"
    assert gpu_check.parse_args(["--out", "x"]).out == "x"


@pytest.mark.parametrize("argv", [["--budget", "0"], ["--iters", "-1"], ["--nope"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(argv)
    assert info.value.code == 2


def test_step_selection(capsys):
    assert [s.name for s in gpu_check.selected_steps(gpu_check.parse_args([]))] == gpu_steps.STEP_NAMES
    assert gpu_steps.STEP_NAMES[:4] == ["env", "wheels", "build", "tests"]
    args = gpu_check.parse_args(["--steps", "tests,bench_ops,build", "--skip", "bench_ops"])
    assert [s.name for s in gpu_check.selected_steps(args)] == ["build", "tests"]  # always in run order
    assert gpu_check.main(["--steps", "tests,bogus", "--dry-run"]) == 2
    assert "unknown step(s) bogus" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ wheels
def test_wheel_folder_detection(tmp_path):
    folder = str(tmp_path / "whl")
    assert gpu_wheels.find_wheels(folder) == ({}, [])  # no folder: nothing, no error
    touch(folder, "easydict-1.14-py3-none-any.whl",
          "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
          "typing_extensions-4.15.0-py3-none-any.whl", "typing_extensions-4.16.0-py3-none-any.whl",
          "README.txt", "broken.whl")
    wheels, problems = gpu_wheels.find_wheels(folder)
    assert sorted(wheels) == ["easydict", "pydantic-core", "typing-extensions"]
    assert wheels["typing-extensions"][0] == "4.16.0" and wheels["pydantic-core"][0] == "2.50.5"
    assert any("several versions" in p and "typing-extensions" in p for p in problems)
    assert any("broken.whl" in p for p in problems)
    installed = {"easydict": "1.14", "typing-extensions": "4.12.2"}.get
    todo = gpu_wheels.wheels_to_install(wheels, installed)
    assert [os.path.basename(p).split("-")[0] for p in todo] == ["pydantic_core", "typing_extensions"]


def test_wheels_step_installs_only_what_is_missing(tmp_path):
    folder = tmp_path / "whl"
    touch(str(folder), "pytest-0.0.1-py3-none-any.whl", f"pytest-{pytest.__version__}-py3-none-any.whl")
    args = gpu_check.parse_args(["--wheels", str(folder), "--work", str(tmp_path / "w")])
    ctx = gpu_runner.Context(args, sys.executable)
    assert gpu_steps.wheel_commands(ctx) == []  # pytest is installed at that version here
    touch(str(folder), "nonexistent_pkg_for_test-1.0-py3-none-any.whl")
    (cmd,) = gpu_steps.wheel_commands(ctx)
    assert cmd[1:4] == ["-m", "pip", "install"] and "--no-index" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("--target") + 1] == ctx.site
    assert [os.path.basename(c) for c in cmd if c.endswith(".whl")] == ["nonexistent_pkg_for_test-1.0-py3-none-any.whl"]


def test_gpu_wheels_dry_run_pins_this_environment(tmp_path, capsys):
    folder = tmp_path / "whl"
    touch(str(folder), "easydict-0.1-py3-none-any.whl")
    assert gpu_wheels.main(["--wheels", str(folder), "--python-version", "3.13", "--dry-run"]) == 0
    out = capsys.readouterr().out
    import importlib.metadata

    assert "pip download --no-deps --only-binary=:all: --python-version 3.13 --implementation cp" in out
    assert "--platform manylinux_2_28_x86_64" in out
    for name in gpu_wheels.DEVICE_WHEELS:
        assert f"{name}=={importlib.metadata.version(name)}" in out
    assert "removing easydict-0.1-py3-none-any.whl (another version)" in out
    assert (folder / "easydict-0.1-py3-none-any.whl").exists()  # a dry run changes nothing
    assert gpu_wheels.main(["--from-python", str(tmp_path / "no-python"), "--dry-run"]) == 2


def test_shell_wrappers(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", os.path.join(ROOT, "dev", "gpu_check.sh"), "--dry-run", "--steps", "data"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "make_synthetic_dataset.py --out /tmp/gpu_check/synthetic --num-train 200" in proc.stdout
    env["PYTHON"] = "no-such-python"
    proc = subprocess.run(["bash", os.path.join(ROOT, "dev", "gpu_wheels.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no 'no-such-python' here" in proc.stderr


# ------------------------------------------------------------------------------------------------ dry run
def test_dry_run_prints_every_step_and_runs_nothing(tmp_path, capsys):
    work = tmp_path / "work"
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(work), "--iters", "50"]) == 0
    out = capsys.readouterr().out
    positions = [out.index(f"[{name}] timeout") for name in gpu_steps.STEP_NAMES]
    assert positions == sorted(positions)
    assert "FORCE_CUDA=1 MAX_JOBS=<device cores> TORCH_CUDA_ARCH_LIST=<device capability>" in out
    assert "gpu_toolchain.py -- " in out and "setup.py build_ext --inplace" in out
    assert f"gpu_tests.py --junit {work / 'junit.xml'} --workers 4 -- -q -m cuda {ROOT}/tests" in out
    assert "SOLVER.MAX_ITER 50" in out and "SOLVER.AMP True" in out and "DEVICE cuda" in out
    assert "torch.distributed.run --standalone --nproc_per_node 1" in out
    assert "benchmark_ops.py --device cuda" in out
    assert ("benchmark_batch_scaling.py --device cuda --size 800 1333 --batches 2 8 16 --precision both" in out)
    assert "profile_launches.py --device cuda --size 800 1333 --train-batch 2" in out
    assert "--backbones vgg16 --size 600 1000 --precision both" in out
    assert "--backbones resnet50_fpn --size 800 1333 --precision fp32" in out
    assert "(nothing to run now: no wheels in" in out
    assert not work.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ the runner
def _fake_steps():
    py = sys.executable

    def parse_missed(ctx, res, log):
        res.summary = "ran; " + log.strip().splitlines()[-1]
        res.status = "MISSED"

    return [
        gpu_runner.Step("first", 30, lambda ctx: [[py, "-c", "print('hello | world')"]]),
        gpu_runner.Step("fails", 30, lambda ctx: [[py, "-c", "print('boom'); raise SystemExit(3)"],
                                                 [py, "-c", "print('never runs')"]]),
        gpu_runner.Step("missed", 30, lambda ctx: [[py, "-c", "print('ratio 2.0')"]], parse=parse_missed),
        gpu_runner.Step("hangs", 2, lambda ctx: [["bash", "-c", "sleep 30 & sleep 30; wait"]]),
        gpu_runner.Step("writes", 30, lambda ctx: [[py, "-c", f"open({ctx.path('r.json')!r}, 'w').write('{{}}')"]]),
    ]


@pytest.fixture
def fake_steps(monkeypatch):
    monkeypatch.setattr(gpu_check, "steps", _fake_steps)
    monkeypatch.setattr(gpu_check, "STEP_NAMES", [s.name for s in _fake_steps()])


def test_runner_times_out_reports_and_goes_on(fake_steps, tmp_path, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    (work / "synthetic").mkdir(parents=True)
    (work / "stale").mkdir()
    start = time.monotonic()
    code = gpu_check.main(["--out", str(out), "--work", str(work), "--budget", "60"])
    assert time.monotonic() - start < 20  # the hanging step was killed after its 2 s, children included
    assert code == 1
    assert sorted(os.listdir(out)) == sorted(gpu_runner.OUT_FILES)
    assert (work / "synthetic").is_dir() and not (work / "stale").exists()  # kept for a rerun / cleaned
    results = {s["name"]: s for s in json.load(open(out / "results.json"))["steps"]}
    assert [results[n]["status"] for n in ("first", "fails", "missed", "hangs", "writes")] == \
        ["ok", "FAIL", "MISSED", "TIMEOUT", "ok"]
    assert results["fails"]["exit_code"] == 3 and results["fails"]["summary"].startswith("exit code 3")
    assert results["hangs"]["summary"].startswith("exit code 124 after 2 s")
    log = open(out / "gpu_check.log").read()
    assert "hello | world" in log and "boom" in log and "never runs" not in log
    printed = capsys.readouterr().out.rstrip().splitlines()
    table = printed[-7:]  # the Markdown table ends the output
    assert table[0] == "| step | status | seconds | result |" and table[1] == "|---|---|---|---|"
    assert table[2].startswith("| first | ok |") and table[2].endswith("|  |")
    assert table[4].startswith("| missed | MISSED |") and table[4].endswith("| ran; ratio 2.0 |")
    assert "boom" in "\n".join(printed)  # a failing step's log tail is shown
    with tarfile.open(out / "artifacts.tar.gz") as tar:
        assert tar.getnames() == ["r.json"]


def test_runner_skips_steps_once_the_budget_is_spent(fake_steps, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_runner, "MIN_STEP_SECONDS", 1)
    code = gpu_check.main(["--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"), "--budget", "2",
                           "--steps", "hangs,writes"])
    assert code == 1
    results = {s["name"]: s for s in json.load(open(tmp_path / "o" / "results.json"))["steps"]}
    assert results["hangs"]["status"] == "TIMEOUT" and results["writes"]["status"] == "SKIP"
    assert "left of the 2 s budget" in results["writes"]["summary"]


# ------------------------------------------------------------------------------------------------ parsers
@pytest.fixture
def ctx(tmp_path):
    c = gpu_runner.Context(gpu_check.parse_args(["--work", str(tmp_path)]), sys.executable)
    os.makedirs(c.path("logs"))
    return c


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def test_parse_training_and_amp_judged_on_accuracy_only(ctx):
    for name, it_s, m in (("train_fp32", 10.0, 0.61), ("train_amp", 9.0, 0.6)):
        write(ctx.path(f"{name}.probe.json"), {"it_per_s": it_s, "peak_memory_bytes": 3 * 2 ** 30, "iterations": 200})
        write(ctx.path(name, "inference", "metrics.json"), {"mAP": m})
        res = gpu_runner.Result(name, "ok")
        gpu_results.parse_train(ctx, res, "")
        ctx.results[name] = res
    fp32, amp = ctx.results["train_fp32"], ctx.results["train_amp"]
    assert fp32.status == "ok" and fp32.summary == "mAP@0.5 0.610, 10.00 it/s, peak 3072 MiB (200 iterations)"
    assert amp.status == "ok"  # slower, but the quick start is launch-bound: its speed is not a verdict on AMP
    assert amp.summary.endswith("; 0.90x fp32's it/s (launch-bound: AMP is judged in batch_scaling), mAP -0.010 vs "
                                "fp32 (target >= -0.02)")
    write(ctx.path("train_amp", "inference", "metrics.json"), {"mAP": 0.58})
    res = gpu_runner.Result("train_amp", "ok")
    gpu_results.parse_train(ctx, res, "")
    assert res.status == "MISSED" and "mAP -0.030 vs fp32" in res.summary
    res = gpu_runner.Result("train_fp32", "ok")
    os.remove(ctx.path("train_fp32", "inference", "metrics.json"))
    gpu_results.parse_train(ctx, res, "")
    assert res.status == "FAIL" and res.summary.startswith("no mAP")


def test_parse_tests_junit_names_failures_and_crashes(ctx):
    write(ctx.path("junit.xml"), """<?xml version="1.0"?><testsuites><testsuite tests="4" failures="1" errors="0"
        skipped="1"><testcase classname="tests.test_ops_cuda" name="test_a"/><testcase classname="tests.test_ops_cuda"
        name="test_b"><failure message="x"/></testcase><testcase classname="tests.test_detector" name="test_c"/>
        <testcase classname="tests.test_detector" name="test_d"><skipped/></testcase></testsuite></testsuites>""")
    res = gpu_runner.Result("tests", "ok")
    gpu_results.parse_tests(ctx, res, "")
    assert res.status == "FAIL"
    assert res.summary == ("2 passed, 1 failed, 0 errors, 1 skipped (2 from test_ops_cuda.py; mode unknown); "
                           "failing: tests.test_ops_cuda.test_b")
    # pytest-xdist's report of a crashed worker, as pytest's junitxml writes it (when="???": an error)
    write(ctx.path("junit.xml"), """<?xml version="1.0"?><testsuites><testsuite tests="3" failures="0" errors="1"
        skipped="0"><testcase classname="tests.test_ops_cuda" name="test_a"/><testcase classname="tests.test_ops_cuda"
        name="test_crash"><error message="failed on setup with &quot;worker 'gw2' crashed while running
        'tests/test_ops_cuda.py::test_crash'&quot;"/></testcase><testcase classname="tests.test_ops_cuda"
        name="test_c"/></testsuite></testsuites>""")
    res = gpu_runner.Result("tests", "FAIL", exit_code=1)
    gpu_results.parse_tests(ctx, res, 'GPU_CHECK_TESTS {"mode": "pytest-xdist -n 4", "crashed": [], "runs": 1}\n')
    assert res.status == "FAIL" and res.data["crashed"] == ["tests/test_ops_cuda.py::test_crash"]
    assert res.summary == ("2 passed, 0 failed, 1 errors, 0 skipped (3 from test_ops_cuda.py; pytest-xdist -n 4); "
                           "1 CRASHED: tests/test_ops_cuda.py::test_crash")
    os.remove(ctx.path("junit.xml"))
    res = gpu_runner.Result("tests", "ok")
    gpu_results.parse_tests(ctx, res, "")
    assert res.status == "FAIL" and res.summary == "no JUnit report (pytest did not finish)"


def test_parse_env_torchrun_and_benchmarks(ctx):
    res = gpu_runner.Result("env", "ok")
    gpu_results.parse_env(ctx, res, 'GPU_CHECK_SMI NVIDIA H200, 580.1, 143771 MiB\nCuda compilation tools, release '
                                  '13.0, V13.0.1\nGPU_CHECK_ENV {"torch": "2.11.0", "cuda_available": true, '
                                  '"capability": "9.0", "cores": 16, "device": "NVIDIA H200"}\n')
    assert res.status == "ok" and ctx.facts["nvcc"] == "13.0" and "NVIDIA H200 (sm 9.0" in res.summary
    assert gpu_steps.build_env(ctx)["TORCH_CUDA_ARCH_LIST"] == "9.0" and gpu_steps.build_env(ctx)["MAX_JOBS"] == "16"

    res = gpu_runner.Result("torchrun", "ok")
    gpu_results.parse_torchrun(ctx, res, "INFO DistributedDataParallel over 1 process(es), backend nccl\n")
    assert res.status == "ok" and res.summary == "DDP over 1 process, backend nccl"
    res = gpu_runner.Result("torchrun", "ok")
    gpu_results.parse_torchrun(ctx, res, "INFO DistributedDataParallel over 1 process(es), backend gloo\n")
    assert res.status == "FAIL"

    write(ctx.path("bench_model.json"), {"rows": [
        {"backbone": "vgg16", "precision": "fp32", "inf_ours": 0.05, "inf_tv": 0.06, "train_ours": 0.2,
         "train_tv": 0.25},
        {"backbone": "vgg16", "precision": "amp", "inf_ours": 0.03, "inf_tv": 0.04, "train_ours": 0.1,
         "train_tv": 0.125}]})
    res = gpu_runner.Result("bench_model", "ok")
    gpu_results.parse_bench_model(ctx, res, "")
    assert res.status == "MISSED" and "vgg16 amp: 33.3 img/s (tv 25.0), 10.0 it/s (tv 8.0)" in res.summary

    write(ctx.path("bench_ops.json"), {"rows": [
        {"device": "cuda", "op": "nms", "size": "12000 boxes", "ratio": "0.40", "target": "ok (target <= 0.50)"},
        {"device": "cuda", "op": "roi_align fwd", "size": "256 RoIs", "ratio": "1.20",
         "target": "MISSED (target <= 1.00)"}], "failed": [["cuda", "roi_align fwd", "256 RoIs"]]})
    res = gpu_runner.Result("bench_ops", "FAIL", exit_code=1)
    gpu_results.parse_bench_ops(ctx, res, "")
    assert res.status == "MISSED"
    assert res.summary == ("2 CUDA rows, worst ratio 1.20 (roi_align fwd, 256 RoIs), NMS 12000 boxes 0.40x "
                           "(target <= 0.5); missed or differing: cuda roi_align fwd 256 RoIs")


def test_parse_build_batch_scaling_and_launches(ctx):
    toolchain = {"summary": "environment toolchain (/opt/gcc/bin/g++) links libstdc++ STATICALLY; system toolchain "
                            "(/usr/bin/g++) links libstdc++.so; building with CC='/usr/bin/gcc'"}
    ctx.facts["capability"] = "9.0"
    res = gpu_runner.Result("build", "ok")
    gpu_results.parse_build(ctx, res, f"GPU_CHECK_TOOLCHAIN {json.dumps(toolchain)}\nGPU_CHECK_KERNELS all CUDA "
                                      "kernels registered\n")
    assert res.summary == toolchain["summary"] + "; TORCH_CUDA_ARCH_LIST=9.0: all CUDA kernels registered"

    def row(precision, mode, batch, ours, tv, peak=None):
        return {"precision": precision, "mode": mode, "batch": batch, "ours_img_s": ours, "tv_img_s": tv,
                "ratio": tv / ours, "ours_peak_mib": peak, "tv_peak_mib": peak and peak + 1000}

    rows = [row("fp32", "train", 8, 57.1, 51.5), row("fp32", "train", 16, 61.9, 56.3, 16937),
            row("amp", "train", 8, 65.4, 62.6), row("amp", "train", 16, 71.4, 68.6, 17831),
            row("amp", "inference", 8, 135.2, 125.5)]
    write(ctx.path("batch_scaling.json"), {"rows": rows, "amp_speedup": {"train": {"8": 1.145, "16": 1.153}},
                                           "failed": []})
    res = gpu_runner.Result("batch_scaling", "ok")
    gpu_results.parse_batch_scaling(ctx, res, "")
    assert res.status == "ok"
    assert res.summary == ("train fp32 b8/b16: 57.1/61.9 img/s (tv 51.5/56.3); train amp b8/b16: 65.4/71.4 img/s "
                           "(tv 62.6/68.6); AMP/fp32 train: b8 1.15x, b16 1.15x; train peak b16: fp32 16,937 MiB (tv "
                           "17,937), amp 17,831 MiB (tv 18,831)")
    write(ctx.path("batch_scaling.json"), {"rows": rows, "amp_speedup": {}, "failed": ["AMP training batch 8: 0.90x "
                                                                                      "fp32 < 1.0"]})
    res = gpu_runner.Result("batch_scaling", "FAIL", exit_code=1)
    gpu_results.parse_batch_scaling(ctx, res, "")
    assert res.status == "MISSED" and res.summary.endswith("; missed: AMP training batch 8: 0.90x fp32 < 1.0")

    counts = {"ours": (38, 1002), "torchvision": (22, 886)}
    write(ctx.path("launches.json"), {"rows": [
        {"model": m, "what": "inference, 1 image", "syncs": s, "launches": k} for m, (s, k) in counts.items()],
        "failed": ["host syncs per inference: ours 38 > torchvision 22"]})
    res = gpu_runner.Result("launches", "FAIL", exit_code=1)
    gpu_results.parse_launches(ctx, res, "")
    assert res.status == "MISSED"
    assert res.summary == ("inference, 1 image: syncs 38 (tv 22), launches 1002 (tv 886); missed: host syncs per "
                           "inference: ours 38 > torchvision 22")
    res = gpu_runner.Result("launches", "FAIL", exit_code=1)
    os.remove(ctx.path("launches.json"))
    gpu_results.parse_launches(ctx, res, "")
    assert res.status == "FAIL" and res.summary == "no results"


def test_the_quickstart_dataset_is_the_quick_starts():
    import quickstart

    assert gpu_steps.QUICKSTART_DATASET == quickstart.DATASET_FLAGS


# ------------------------------------------------------------------------------------------------ toolchain
def test_toolchain_choice_follows_the_libstdcxx_rule():
    static = {"cxx": "/opt/gcc/bin/g++", "needed": ["libc.so.6"], "shared_libstdcxx": False}
    shared = {"cxx": "/usr/bin/g++", "needed": ["libstdc++.so.6"], "shared_libstdcxx": True}
    seen = []

    def fake_probe(results):
        def probe(env):
            seen.append(env)
            return results[len(seen) - 1]
        return probe

    report = gpu_toolchain.choose({"CC": "/opt/gcc/bin/gcc", "LDFLAGS": "-static-libstdc++ -L/x"},
                                  fake_probe([static, shared]))
    assert report["ok"] and seen[1]["CXX"] == "/usr/bin/g++" and seen[1]["LDSHARED"] == "/usr/bin/g++ -shared"
    assert report["overrides"]["LDFLAGS"] == "-L/x" and report["overrides"]["CC"] == "/usr/bin/gcc"
    assert gpu_toolchain.describe(report) == (
        "environment toolchain (/opt/gcc/bin/g++) links libstdc++ STATICALLY; system toolchain (/usr/bin/g++) links "
        "libstdc++.so; building with CC='/usr/bin/gcc' CXX='/usr/bin/g++' LDSHARED='/usr/bin/g++ -shared'")
    seen.clear()
    report = gpu_toolchain.choose({}, fake_probe([shared]))
    assert report["ok"] and report["overrides"] == {} and len(seen) == 1
    assert gpu_toolchain.describe(report).endswith("links libstdc++.so; building with it")
    seen.clear()
    report = gpu_toolchain.choose({}, fake_probe([static, {"cxx": "/usr/bin/g++", "error": "not found"}]))
    assert not report["ok"] and gpu_toolchain.describe(report).endswith(
        "system toolchain (/usr/bin/g++) error: not found; no toolchain links libstdc++ dynamically: not building")


@pytest.mark.skipif(not os.path.exists("/usr/bin/g++"), reason="no system C++ compiler at /usr/bin/g++")
def test_toolchain_probe_builds_with_the_system_compiler_when_the_default_links_statically(tmp_path):
    env = {**os.environ, "LDFLAGS": "-static-libstdc++", "PYTHONPATH": os.path.join(ROOT, "dev")}
    marker = tmp_path / "built"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "gpu_toolchain.py"), "--", sys.executable, "-c",
                           f"import os; open({str(marker)!r}, 'w').write(os.environ['CXX'] + ' ' + "
                           f"repr(os.environ['LDFLAGS']))"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = gpu_results.json_line(proc.stdout, "GPU_CHECK_TOOLCHAIN")
    first, second = report["probes"]
    assert not first["shared_libstdcxx"] and "libc.so.6" in first["needed"] and second["shared_libstdcxx"]
    assert marker.read_text() == "/usr/bin/g++ ''"  # the build ran with the system toolchain, static flag dropped


# ------------------------------------------------------------------------------------------------ crashing tests
CRASHING_TESTS = """
import os, signal, pytest
def test_a(): pass
def test_segfault(): os.kill(os.getpid(), signal.SIGSEGV)
def test_fails(): assert 1 == 2
@pytest.mark.skip(reason="no CUDA device")
def test_skipped(): pass
@pytest.mark.parametrize("i", [1, 2])
def test_aborts(i):
    if i == 2:
        os.abort()
def test_last(): pass
"""


def test_a_crashing_test_is_named_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_crashing.py").write_text(CRASHING_TESTS)
    junit = tmp_path / "junit.xml"
    monkeypatch.setattr(gpu_tests.importlib.util, "find_spec", lambda name: None)  # no pytest-xdist: the fallback
    # --rootdir: test ids relative to the crashing tests' folder wherever the checkout is (pytest otherwise takes the
    # common ancestor of its working directory, the checkout, and tmp_path: "/tmp" for a clone under /tmp)
    code = gpu_tests.main(["--junit", str(junit), "--", "-q", "-p", "no:faulthandler", "--rootdir",
                           str(tmp_path / "tests"), str(tmp_path / "tests")])
    assert code == 1
    report = gpu_results.json_line(capsys.readouterr().out, "GPU_CHECK_TESTS")
    assert report["crashed"] == ["test_crashing.py::test_segfault", "test_crashing.py::test_aborts[2]"]
    assert report["runs"] == 3 and report["mode"].startswith("serial")
    counts = gpu_results.junit_counts(str(junit))
    assert (counts["tests"], counts["passed"], counts["failures"], counts["skipped"]) == (7, 3, 3, 1)
    assert sorted(counts["crashed"]) == ["test_crashing.test_aborts[2]", "test_crashing.test_segfault"]


def test_with_xdist_the_workers_replace_crashed_ones(tmp_path, monkeypatch, capsys):
    """The xdist command line, and the crashed test read back from xdist's JUnit report (a stand-in python)."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/bash\necho \"$@\" > %s\nwhile [ \"$1\" != --junitxml ]; do shift; done\n"
                    "echo \"<testsuites><testsuite tests='1' failures='1'><testcase classname='t' name='x'><failure "
                    "message=\\\"worker 'gw0' crashed while running 't.py::x'\\\"/></testcase></testsuite>"
                    "</testsuites>\" > $2\nexit 1\n" % (tmp_path / "argv"))
    fake.chmod(0o755)
    report = gpu_tests.run_xdist(str(fake), ["-m", "cuda", "tests"], str(tmp_path / "j.xml"), 4, 50)
    assert report == {"mode": "pytest-xdist -n 4", "exit_code": 1, "crashed": ["t.py::x"], "runs": 1}
    assert (tmp_path / "argv").read_text().split() == ["-m", "pytest", "-n", "4", "--max-worker-restart", "50", "-p",
                                                        "no:cacheprovider", "--junitxml", str(tmp_path / "j.xml"),
                                                        "-m", "cuda", "tests"]


# ------------------------------------------------------------------------------------------------ train probe
def test_train_probe_times_a_real_cpu_run(tmp_path):
    import make_synthetic_dataset
    import torch
    from detection.engine.trainer import Trainer

    data = tmp_path / "data"
    assert make_synthetic_dataset.main(["--out", str(data), "--num-train", "4", "--num-test", "2", "--size",
                                        "160x128", "--min-size", "24", "--max-size", "64", "--quiet"]) in (0, None)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("MODEL: {BACKBONE: {NAME: tiny, WEIGHTS: ''}, FREEZE_AT: 0}\n"
                   f"DATA: {{ROOT: '{data}', CLASSES: [circle, square, triangle], NUM_WORKERS: 0}}\n"
                   "TRAIN: {SCALES: [128], MAX_SIZE: 160, IMS_PER_BATCH: 2, RPN_PRE_NMS_TOP_N: 300, "
                   "RPN_POST_NMS_TOP_N: 50, BATCH_SIZE: 16}\n"
                   "SOLVER: {MAX_ITER: 3, BASE_LR: 0.001, STEPS: [], WARMUP_ITERS: 0}\n"
                   f"DEVICE: cpu\nOUTPUT_DIR: '{tmp_path / 'out'}'\n")
    original = Trainer.run_step, Trainer.train
    probe = tmp_path / "probe.json"
    assert gpu_train_probe.main([str(probe), "--", "--cfg", str(cfg), "--no-progress", "--skip-eval"]) == 0
    assert (Trainer.run_step, Trainer.train) == original  # restored
    info = json.loads(probe.read_text())
    assert info["exit_code"] == 0 and info["iterations"] == 3 and len(info["step_seconds"]) == 3
    assert info["it_per_s"] == pytest.approx(3 / sum(info["step_seconds"]))
    assert info["train_seconds"] >= sum(info["step_seconds"])
    assert ("peak_memory_bytes" in info) == torch.cuda.is_available()
    assert gpu_train_probe.main(["--cfg"]) == 2
