"""One writer per OUTPUT_DIR (detection/engine/run_lock.py): the flock on OUTPUT_DIR/train.lock, held for the whole
training run, released on exit and by the kernel on kill; a stale lock file never blocks; a second writer exits 2
naming the process that holds the folder. The other process is a few lines of plain Python (no torch import), run
with a timeout and killed at the end."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from detection.engine.launch import ToolError
from detection.engine.run_lock import LOCK_NAME, OutputDirLock
from test_bad_inputs import FAST, data_root  # noqa: F401  (data_root: a fixture)
import test_tools
from test_tools import write_cfg

train_tool = test_tools.train_tool

# Another process holding the folder as train_net does (flock on train.lock, its description in the file).
HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid: {os.getpid()}\\nhost: {os.uname().nodename}\\nstarted: 2026-12-07 09:30:00 UTC\\n"
                 f"command: train_net.py --cfg other.yaml\\n".encode())
    print("locked", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def holder(tmp_path):
    """start(folder) -> the Popen of a process holding folder's lock; killed (and reaped) at the end."""
    procs = []

    def start(folder):
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / LOCK_NAME)], stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_a_second_lock_on_the_folder_is_refused_naming_the_holder(tmp_path):
    first = OutputDirLock(str(tmp_path)).acquire()
    with pytest.raises(ToolError) as info:
        OutputDirLock(str(tmp_path)).acquire()
    assert str(info.value).startswith(f"OUTPUT_DIR {tmp_path} is in use by process {os.getpid()} (started ")
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    OutputDirLock(str(tmp_path)).acquire().release()  # free again


def test_a_stale_lock_file_never_blocks(tmp_path):
    (tmp_path / LOCK_NAME).write_text("pid: 999999\nhost: elsewhere\nstarted: yesterday\n")  # a killed run's file
    lock = OutputDirLock(str(tmp_path)).acquire()
    assert f"pid: {os.getpid()}\n" in (tmp_path / LOCK_NAME).read_text()
    lock.release()


def test_train_net_is_refused_while_another_process_holds_the_folder_and_runs_once_it_is_killed(
        data_root, tmp_path, holder, capsys):
    """Two runs on one OUTPUT_DIR used to both exit 0 (metrics.jsonl 1,1,2,2..., model_final of the other run).
    The refused run writes nothing there; a SIGKILLed holder leaves its lock file, which does not block."""
    out = tmp_path / "out"
    proc = holder(out)
    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, out)
    assert train_tool.main(["--cfg", cfg, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: OUTPUT_DIR {out} is in use by process {proc.pid} (started 2026-12-07 09:30:00 UTC: "
                   f"train_net.py --cfg other.yaml); wait for that run to end, or choose another OUTPUT_DIR "
                   f"(--set OUTPUT_DIR ...)")
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # no log.txt, config.yaml, metrics.jsonl of the refused run
    assert train_tool.main(["--cfg", cfg, *FAST, "--resume"]) == 2  # --resume is no way around it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert (out / LOCK_NAME).exists()  # the killed holder's file stays behind ...
    assert train_tool.main(["--cfg", cfg, *FAST]) == 0  # ... and does not block
    assert not (out / LOCK_NAME).exists()  # released (and removed) at the end of the run


def test_a_second_run_before_the_first_checkpoint_is_refused(data_root, tmp_path, monkeypatch, capsys):
    """While a run trains, before its first checkpoint (no last_checkpoint yet, which is all the old refusal
    looked at), a second train_net on its OUTPUT_DIR - with or without --resume - exits 2; the first run
    finishes undisturbed."""
    from detection.engine.trainer import Trainer

    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, tmp_path / "out")
    other = write_cfg(tmp_path / "other.yaml", data_root, tmp_path / "out", SOLVER="{BASE_LR: 0.5}")
    original, codes = Trainer.run_step, []

    def step_then_start_another_run(self, iteration):
        if iteration == 0:
            assert not (tmp_path / "out" / "last_checkpoint").exists()
            codes.append(train_tool.main(["--cfg", other, *FAST]))
            codes.append(train_tool.main(["--cfg", other, *FAST, "--resume"]))
        return original(self, iteration)

    monkeypatch.setattr(Trainer, "run_step", step_then_start_another_run)
    assert train_tool.main(["--cfg", cfg, *FAST]) == 0
    assert codes == [2, 2]
    assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    rows = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2]  # one run's rows only
