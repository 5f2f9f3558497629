"""dev/'s shared harness and benchmark scripts on the CPU: timing, tables, running a tool in-process, the clear
exit without the package, the benchmarks' option checks, the batch-scaling benchmark's bookkeeping (stand-in
models: the R50-FPN pair is far too slow for a unit test on this CPU) and the launch profile's counting (a real
torch.profiler run of host reads)."""
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import benchmark_batch_scaling
import harness
import profile_launches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------ harness
def test_alternating_turns_the_order_and_times_every_call():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = harness.alternating(fns, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    seconds, out = harness.timed(lambda: time.sleep(0.01) or 7)
    assert out == 7 and seconds >= 0.01
    assert harness.median([3, 1, 2]) == 2 and harness.ratio(1.0, 2.0) == 0.5


def test_tables_and_machine():
    assert harness.markdown_table(("a", "b"), [("x|y", "two\nlines"), (1, 2.5)]).splitlines() == [
        "| a | b |", "|---|---|", "| x\\|y | two lines |", "| 1 | 2.5 |"]
    assert harness.text_table(("op", "ms"), [("nms", 1.5), ("roi_align", 12)]).splitlines() == [
        "op         ms", "nms        1.5", "roi_align  12"]
    info = harness.machine("cpu")
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and info["cores"] >= 1
    assert harness.describe(info).startswith(f"{info['date']}, CPU, {info['cores']} cores")
    cuda = dict(info, device="NVIDIA H200", capability="9.0", memory_gib=139.8, cuda="13.0")
    assert "CUDA NVIDIA H200 (sm 9.0, 139.8 GiB, CUDA 13.0)" in harness.describe(cuda)


def test_json_round_trip(tmp_path):
    harness.write_json(str(tmp_path / "r.json"), {"a": [1, 2]})
    assert harness.read_json(str(tmp_path / "r.json")) == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    assert harness.read_json(str(tmp_path / "bad.json")) is None and harness.read_json(str(tmp_path / "no")) is None


def test_run_script_runs_a_tool_as_python_would(tmp_path, capsys):
    (tmp_path / "sibling.py").write_text("VALUE = 'from the script folder'\n")
    (tmp_path / "tool.py").write_text("import sys, sibling\nprint(sibling.VALUE, sys.argv[1:])\n"
                                      "if __name__ == '__main__':\n    sys.exit(int(sys.argv[1]))\n")
    path, argv = list(sys.path), list(sys.argv)
    assert harness.run_script(str(tmp_path / "tool.py"), ["3"]) == 3
    assert capsys.readouterr().out == "from the script folder ['3']\n"
    assert harness.run_script(str(tmp_path / "tool.py"), ["0"]) == 0
    assert sys.path == path and sys.argv == argv


def test_a_tool_without_the_package_says_make_setup():
    """tools/ and dev/ scripts exit 2 with one line when `detection` cannot be imported (python -S: no site, so
    neither the editable install nor the requirements)."""
    for script in (os.path.join(ROOT, "tools", "reval.py"), os.path.join(ROOT, "dev", "benchmark_ops.py")):
        proc = subprocess.run([sys.executable, "-S", script, "--help"], capture_output=True, text=True, timeout=60,
                              cwd="/", env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert proc.returncode == 2, proc.stderr
        name = os.path.basename(script)
        assert proc.stderr.startswith(f"{name}: cannot import the detection package (No module named 'detection').")
        assert "Run `make setup` in the repository root" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_no_tool_edits_sys_path():
    for folder in ("tools", "dev"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".py"):
                text = open(os.path.join(ROOT, folder, name), encoding="utf-8").read()
                assert "sys.path.insert" not in text or name == "harness.py", f"{folder}/{name}"


# ------------------------------------------------------------------------------------------------ options
def test_benchmark_options_refuse_cpu_amp_and_missing_cuda(capsys):
    import benchmark_model
    import benchmark_ops

    assert benchmark_model.main(["--precision", "amp"]) == 2
    assert "--precision amp needs --device cuda" in capsys.readouterr().err
    assert benchmark_ops.target_for("cuda", "nms", "12000 boxes") == 0.5
    assert benchmark_ops.target_for("cuda", "roi_pool fwd", "256 RoIs") == 1.0
    if not torch.cuda.is_available():
        assert benchmark_model.main(["--device", "cuda"]) == 2
        with pytest.raises(SystemExit, match="no CUDA device"):
            benchmark_ops.main(["--device", "cuda"])
        for module in (benchmark_batch_scaling, profile_launches):
            assert module.main(["--device", "cuda"]) == 2
            assert "--device cuda: no CUDA device is visible" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark_batch_scaling.main(["--device", "cpu", "--batches", "0"])


# ------------------------------------------------------------------------------------------------ batch scaling
class StandInDetector(nn.Module):
    """A detector's interface (a list of [3, H, W] images; losses in training, detections in eval) over one conv,
    taking `seconds` per call (a sleep: the two models' speeds differ by far more than this busy CPU's noise)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.conv, self.seconds = nn.Conv2d(3, 8, 3, padding=1), seconds

    def forward(self, images, targets=None):
        time.sleep(self.seconds)
        y = self.conv(torch.stack(images))
        if self.training:
            return {"loss": y.float().mean(), "loss_box": y.float().abs().mean()}
        return [{"boxes": torch.zeros(0, 4), "scores": y.new_zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in images]


def test_batch_scaling_rows_speedups_and_targets(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(benchmark_batch_scaling, "build_fpn_pair",
                        lambda h, w: (StandInDetector(0.001), StandInDetector(0.08)))
    path = tmp_path / "bs.json"
    code = benchmark_batch_scaling.main(["--device", "cpu", "--size", "32", "48", "--batches", "2", "1",
                                         "--precision", "both", "--repeats", "3", "--warmup", "1", "--json", str(path)])
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert [(r["precision"], r["mode"], r["batch"]) for r in rows] == [
        (p, m, b) for p in ("fp32", "amp") for m in ("inference", "train") for b in (1, 2)]
    for r in rows:
        assert r["ours_img_s"] == pytest.approx(r["batch"] / r["ours_s"]) and r["ours_peak_mib"] is None
        assert r["ratio"] == pytest.approx(r["ours_s"] / r["tv_s"]) and r["ratio"] < 1  # 1 ms against 80 ms
    assert set(data["amp_speedup"]) == {"inference", "train"} and set(data["amp_speedup"]["train"]) == {"1", "2"}
    assert code == (1 if data["failed"] else 0)  # AMP (bfloat16 on the CPU) is judged from batch 8 only
    out = capsys.readouterr().out
    assert "| precision | mode | batch | ours img/s | torchvision img/s | ratio | ours peak MiB |" in out


def test_batch_scaling_targets():
    rows = [{"precision": "fp32", "mode": "train", "batch": 8, "ours_img_s": 50.0, "ratio": 0.9},
            {"precision": "amp", "mode": "train", "batch": 8, "ours_img_s": 45.0, "ratio": 1.05},
            {"precision": "amp", "mode": "train", "batch": 2, "ours_img_s": 10.0, "ratio": 0.9},
            {"precision": "fp32", "mode": "train", "batch": 2, "ours_img_s": 20.0, "ratio": 0.9},
            {"precision": "fp32", "mode": "train", "batch": 16, "ours_error": "out of memory"}]
    speedups = benchmark_batch_scaling.amp_speedups(rows)
    assert speedups == {"train": {8: 0.9, 2: 0.5}}
    assert benchmark_batch_scaling.missed_targets(rows, speedups) == [
        "amp train batch 8: ratio 1.05 > 1.0", "fp32 train batch 16: did not run",
        "AMP training batch 8: 0.90x fp32 < 1.0"]  # batch 2's 0.5x is launch-bound: not judged


def test_an_out_of_memory_block_is_reported_not_raised():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    block = benchmark_batch_scaling.measure_block(oom, repeats=2, warmup=0, device=torch.device("cpu"))
    assert block == {"error": "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)"}


# ------------------------------------------------------------------------------------------------ launches
def test_launch_counts_per_call():
    events = [SimpleNamespace(key="cudaLaunchKernel", count=2000), SimpleNamespace(key="cuLaunchKernel", count=10),
              SimpleNamespace(key="cudaStreamSynchronize", count=76), SimpleNamespace(key="aten::conv2d", count=106),
              SimpleNamespace(key="aten::_local_scalar_dense", count=40)]
    counts = profile_launches.count_calls(events, calls=2)
    assert counts["cudaLaunchKernel"] == 1000 and counts["launches"] == 1005 and counts["syncs"] == 38
    assert counts["host_reads"] == 20 and "aten::conv2d" not in counts


def test_the_profile_counts_host_reads_on_the_cpu():
    """The CPU-side proxy: every .item() is an aten::_local_scalar_dense call (a host sync on CUDA)."""
    x = torch.arange(10.0)

    def fn():
        return [x[i].item() for i in range(3)] + [bool((x > 5).any())] + [x[x > 7].sum()]

    counts = profile_launches.profile_calls(fn, iterations=2, device=torch.device("cpu"))
    assert counts["aten::_local_scalar_dense"] == 4 and counts["aten::nonzero"] == 1
    assert counts["syncs"] == 0 and counts["launches"] == 0 and counts["host_syncs_proxy"] == 5
    rows = [{"model": m, "what": "inference, 1 image", **counts} for m in ("ours", "torchvision")]
    assert profile_launches.missed_targets(rows) == []
    rows[0] = dict(rows[0], syncs=38)
    assert profile_launches.missed_targets(rows) == ["host syncs per inference: ours 38 > torchvision 0"]
    assert "| ours | inference, 1 image | 38 (0) | 0 (0) | 0 | 5 | 5 |" in profile_launches.table(rows)


# ------------------------------------------------------------------------------------------------ accuracy levers
def test_levers_spread_and_plot(tmp_path):
    """The table cell (mean ± sample sd (min-max)) and the picture: one panel per set and metric."""
    import benchmark_levers
    from PIL import Image

    assert benchmark_levers._spread([0.5, 0.6, 0.7]) == "0.600 ± 0.100 (0.500-0.700)"
    assert benchmark_levers._spread([0.25]) == "0.250 ± 0.000 (0.250-0.250)"
    rows = {v[0]: [{"mAP50_voc": 0.9 + 0.01 * i + 0.001 * s, "AP": 0.7 + 0.01 * i, "AP75": 0.8 - 0.01 * s}
                   for s in range(3)] for i, v in enumerate(benchmark_levers.VARIANTS)}
    results = {"sets": {"quickstart": {"rows": rows}, "hard": {"rows": rows}}}
    path = tmp_path / "levers.png"
    benchmark_levers.plot_levers(results, str(path))
    width, height = Image.open(path).size
    assert width > height > 500  # 2 sets x 3 metrics at 110 dpi: about 1390 x 750


def test_soft_nms_benchmark_rows_and_missing_cuda(tmp_path, capsys):
    import benchmark_soft_nms

    out = tmp_path / "soft.json"
    assert benchmark_soft_nms.main(["--device", "cpu", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["cpu"]["rows"]
    assert [(r[1], r[2]) for r in rows] == [(f"{n} boxes, {c} classes", m) for n, c in benchmark_soft_nms.SIZES
                                            for m in ("linear", "gaussian")]
    assert "| cpu | 300 boxes, 3 classes | linear |" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert benchmark_soft_nms.main(["--device", "cuda"]) == 2
        assert "no CUDA device is visible" in capsys.readouterr().err
