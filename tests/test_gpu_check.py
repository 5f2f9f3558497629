"""tools/gpu_check.py (the time-boxed GPU run), tools/gpu_wheels.py and tools/gpu_train_probe.py on the CPU: argument
parsing, the wheel folder, the steps' commands (dry run), the runner's timeouts / budget / outputs with stand-in
steps, the result parsers, the Markdown table, and one real probed training run on the CPU."""
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gpu_check  # noqa: E402
import gpu_train_probe  # noqa: E402
import gpu_wheels  # noqa: E402


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
    assert [s.name for s in gpu_check.selected_steps(gpu_check.parse_args([]))] == gpu_check.STEP_NAMES
    assert gpu_check.STEP_NAMES[:4] == ["env", "wheels", "build", "tests"]
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
    ctx = gpu_check.Context(gpu_check.parse_args(["--wheels", str(folder), "--work", str(tmp_path / "w")]))
    assert gpu_check.wheel_commands(ctx) == []  # pytest is installed at that version here
    touch(str(folder), "nonexistent_pkg_for_test-1.0-py3-none-any.whl")
    (cmd,) = gpu_check.wheel_commands(ctx)
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
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--dry-run", "--steps", "data"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "make_synthetic_dataset.py --out /tmp/gpu_check/synthetic --num-train 200" in proc.stdout
    env["PYTHON"] = "no-such-python"
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_wheels.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no 'no-such-python' here" in proc.stderr


# ------------------------------------------------------------------------------------------------ dry run
def test_dry_run_prints_every_step_and_runs_nothing(tmp_path, capsys):
    work = tmp_path / "work"
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(work), "--iters", "50"]) == 0
    out = capsys.readouterr().out
    positions = [out.index(f"[{name}] timeout") for name in gpu_check.STEP_NAMES]
    assert positions == sorted(positions)
    assert "FORCE_CUDA=1 MAX_JOBS=<device cores> TORCH_CUDA_ARCH_LIST=<device capability>" in out
    assert "setup.py build_ext --inplace" in out
    assert "-m pytest -q -m cuda" in out and "--junitxml" in out
    assert "SOLVER.MAX_ITER 50" in out and "SOLVER.AMP True" in out and "DEVICE cuda" in out
    assert "torch.distributed.run --standalone --nproc_per_node 1" in out
    assert "benchmark_ops.py --device cuda" in out
    assert "--backbones vgg16 resnet50 --size 600 1000 --precision both" in out
    assert "(nothing to run now: no wheels in" in out
    assert not work.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ the runner
def _fake_steps():
    py = sys.executable

    def parse_missed(ctx, res, log):
        res.summary = "ran; " + log.strip().splitlines()[-1]
        res.status = "MISSED"

    return [
        gpu_check.Step("first", 30, lambda ctx: [[py, "-c", "print('hello | world')"]]),
        gpu_check.Step("fails", 30, lambda ctx: [[py, "-c", "print('boom'); raise SystemExit(3)"],
                                                 [py, "-c", "print('never runs')"]]),
        gpu_check.Step("missed", 30, lambda ctx: [[py, "-c", "print('ratio 2.0')"]], parse=parse_missed),
        gpu_check.Step("hangs", 2, lambda ctx: [["bash", "-c", "sleep 30 & sleep 30; wait"]]),
        gpu_check.Step("writes", 30, lambda ctx: [[py, "-c", f"open({ctx.path('r.json')!r}, 'w').write('{{}}')"]]),
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
    assert sorted(os.listdir(out)) == sorted(gpu_check.OUT_FILES)
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
    monkeypatch.setattr(gpu_check, "MIN_STEP_SECONDS", 1)
    code = gpu_check.main(["--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"), "--budget", "2",
                           "--steps", "hangs,writes"])
    assert code == 1
    results = {s["name"]: s for s in json.load(open(tmp_path / "o" / "results.json"))["steps"]}
    assert results["hangs"]["status"] == "TIMEOUT" and results["writes"]["status"] == "SKIP"
    assert "left of the 2 s budget" in results["writes"]["summary"]


def test_markdown_table_escapes_cells():
    table = gpu_check.markdown_table(("a", "b"), [("x|y", "two\nlines"), (1, 2.5)])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | two lines |", "| 1 | 2.5 |"]


# ------------------------------------------------------------------------------------------------ parsers
@pytest.fixture
def ctx(tmp_path):
    c = gpu_check.Context(gpu_check.parse_args(["--work", str(tmp_path)]))
    os.makedirs(c.path("logs"))
    return c


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def test_parse_training_and_the_amp_targets(ctx):
    for name, it_s, m in (("train_fp32", 10.0, 0.61), ("train_amp", 13.0, 0.6)):
        write(ctx.path(f"{name}.probe.json"), {"it_per_s": it_s, "peak_memory_bytes": 3 * 2 ** 30, "iterations": 200})
        write(ctx.path(name, "inference", "metrics.json"), {"mAP": m})
        res = gpu_check.Result(name, "ok")
        gpu_check.parse_train(ctx, res, "")
        ctx.results[name] = res
    fp32, amp = ctx.results["train_fp32"], ctx.results["train_amp"]
    assert fp32.status == "ok" and fp32.summary == "mAP@0.5 0.610, 10.00 it/s, peak 3072 MiB (200 iterations)"
    assert amp.status == "MISSED" and "1.30x it/s (target >= 1.5)" in amp.summary and "mAP -0.010" in amp.summary
    res = gpu_check.Result("train_fp32", "ok")
    os.remove(ctx.path("train_fp32", "inference", "metrics.json"))
    gpu_check.parse_train(ctx, res, "")
    assert res.status == "FAIL" and res.summary.startswith("no mAP")


def test_parse_tests_junit(ctx):
    write(ctx.path("junit.xml"), """<?xml version="1.0"?><testsuites><testsuite tests="4" failures="1" errors="0"
        skipped="1"><testcase classname="tests.test_ops_cuda" name="test_a"/><testcase classname="tests.test_ops_cuda"
        name="test_b"><failure message="x"/></testcase><testcase classname="tests.test_detector" name="test_c"/>
        <testcase classname="tests.test_detector" name="test_d"><skipped/></testcase></testsuite></testsuites>""")
    res = gpu_check.Result("tests", "ok")
    gpu_check.parse_tests(ctx, res, "")
    assert res.status == "FAIL"
    assert res.summary == ("2 passed, 1 failed, 0 errors, 1 skipped (2 from test_ops_cuda.py); failing: "
                           "tests.test_ops_cuda.test_b")


def test_parse_env_torchrun_and_benchmarks(ctx):
    res = gpu_check.Result("env", "ok")
    gpu_check.parse_env(ctx, res, 'GPU_CHECK_SMI NVIDIA H200, 580.1, 143771 MiB\nCuda compilation tools, release '
                                  '13.0, V13.0.1\nGPU_CHECK_ENV {"torch": "2.11.0", "cuda_available": true, '
                                  '"capability": "9.0", "cores": 16, "device": "NVIDIA H200"}\n')
    assert res.status == "ok" and ctx.facts["nvcc"] == "13.0" and "NVIDIA H200 (sm 9.0" in res.summary
    assert gpu_check.build_env(ctx)["TORCH_CUDA_ARCH_LIST"] == "9.0" and gpu_check.build_env(ctx)["MAX_JOBS"] == "16"

    res = gpu_check.Result("torchrun", "ok")
    gpu_check.parse_torchrun(ctx, res, "INFO DistributedDataParallel over 1 process(es), backend nccl\n")
    assert res.status == "ok" and res.summary == "DDP over 1 process, backend nccl"
    res = gpu_check.Result("torchrun", "ok")
    gpu_check.parse_torchrun(ctx, res, "INFO DistributedDataParallel over 1 process(es), backend gloo\n")
    assert res.status == "FAIL"

    write(ctx.path("bench_model.json"), {"rows": [
        {"backbone": "vgg16", "precision": "fp32", "inf_ours": 0.05, "inf_tv": 0.06, "train_ours": 0.2,
         "train_tv": 0.25},
        {"backbone": "vgg16", "precision": "amp", "inf_ours": 0.03, "inf_tv": 0.04, "train_ours": 0.1,
         "train_tv": 0.125}]})
    res = gpu_check.Result("bench_model", "ok")
    gpu_check.parse_bench_model(ctx, res, "")
    assert res.status == "MISSED" and "vgg16 amp: 33.3 img/s (tv 25.0), 10.0 it/s (tv 8.0)" in res.summary

    write(ctx.path("bench_ops.json"), {"rows": [
        {"device": "cuda", "op": "nms", "size": "12000 boxes", "ratio": "0.40", "target": "ok (target <= 0.50)"},
        {"device": "cuda", "op": "roi_align fwd", "size": "256 RoIs", "ratio": "1.20",
         "target": "MISSED (target <= 1.00)"}], "failed": [["cuda", "roi_align fwd", "256 RoIs"]]})
    res = gpu_check.Result("bench_ops", "FAIL", exit_code=1)
    gpu_check.parse_bench_ops(ctx, res, "")
    assert res.status == "MISSED"
    assert res.summary == ("2 CUDA rows, worst ratio 1.20 (roi_align fwd, 256 RoIs), NMS 12000 boxes 0.40x "
                           "(target <= 0.5); missed or differing: cuda roi_align fwd 256 RoIs")


# ------------------------------------------------------------------------------------------------ benchmarks
def test_benchmark_options_refuse_cpu_amp_and_missing_cuda(capsys):
    import benchmark_model
    import benchmark_ops
    import torch

    assert benchmark_model.main(["--precision", "amp"]) == 2
    assert "--precision amp needs --device cuda" in capsys.readouterr().err
    assert benchmark_ops.target_for("cuda", "nms", "12000 boxes") == 0.5
    assert benchmark_ops.target_for("cuda", "roi_pool fwd", "256 RoIs") == 1.0
    if not torch.cuda.is_available():
        assert benchmark_model.main(["--device", "cuda"]) == 2
        with pytest.raises(SystemExit, match="no CUDA device"):
            benchmark_ops.main(["--device", "cuda"])


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
