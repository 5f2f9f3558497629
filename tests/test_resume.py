"""train_net --resume checks the config against the checkpoint's, key by key (detection/engine/resume.py,
detection/config/resume_rules.py), and a run restarted after a kill before its first checkpoint starts afresh.
Tiny backbone, 2-4 iterations per run, in process."""
import json
import os

import pytest
import torch

from test_bad_inputs import data_root  # noqa: F401  (a fixture: a small generated dataset)
import test_tools
from test_tools import write_cfg

train_tool = test_tools.train_tool

# the run's own overrides (a resume passes them again, as it would pass the run's config)
RUN = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "[1]", "SOLVER.WARMUP_ITERS", "0", "TRAIN.SNAPSHOT_ITERS", "1"]


def train(cfg, *sets, flags=()):
    return train_tool.main(["--cfg", cfg, "--no-progress", "--skip-eval", *flags, "--set", *RUN, *sets])


def rows(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


@pytest.fixture
def finished(data_root, tmp_path):
    """(config, output dir) of a finished 2-iteration run (BASE_LR 0.01, lr x0.1 after iteration 1)."""
    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, tmp_path / "out")
    assert train(cfg) == 0
    return cfg, str(tmp_path / "out")


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err[-2000:]
    return err


def test_a_changed_schedule_is_refused_and_config_yaml_keeps_what_ran(finished, capsys):
    """`--resume --set SOLVER.BASE_LR 0.5` kept the checkpoint's lr while config.yaml said 0.5. Now it is refused,
    naming the key and the flag that allows it, and nothing in OUTPUT_DIR changes."""
    cfg, out = finished
    before = open(os.path.join(out, "config.yaml")).read()
    assert train(cfg, "SOLVER.BASE_LR", "0.5", "SOLVER.GAMMA", "0.5", flags=["--resume"]) == 2
    err = one_line(capsys)
    assert (f"cannot resume from {out}/model_final.pth with a changed config: SOLVER.BASE_LR: 0.01 -> 0.5; "
            f"SOLVER.GAMMA: 0.1 -> 0.5 (these cannot change in the middle of a run)") in err
    assert "--allow-changes SOLVER.BASE_LR SOLVER.GAMMA" in err
    assert open(os.path.join(out, "config.yaml")).read() == before


def test_allowed_changes_take_effect_and_config_yaml_notes_them(finished):
    """--allow-changes SOLVER.BASE_LR: the new lr is the one used from the checkpoint's iteration on (the
    schedule comes from the config, the optimizer state from the checkpoint); MAX_ITER may grow under a step
    schedule, TRAIN.LOG_PERIOD may change, and config.yaml says what ran and since when."""
    cfg, out = finished
    assert train(cfg, "SOLVER.BASE_LR", "0.5", "SOLVER.MAX_ITER", "4", "TRAIN.LOG_PERIOD", "2",
                 flags=["--resume", "--allow-changes", "SOLVER.BASE_LR"]) == 0
    lrs = {r["iteration"]: r["lr"] for r in rows(out)}
    assert lrs[1] == pytest.approx(0.01) and lrs[2] == pytest.approx(0.001)  # the first run's
    assert lrs[4] == pytest.approx(0.05)  # 0.5 x 0.1 (after step 1): the new BASE_LR is in effect
    text = open(os.path.join(out, "config.yaml")).read()
    assert text.startswith("# resumed at iteration 2 from model_final.pth with TRAIN.LOG_PERIOD: 1 -> 2, "
                           "SOLVER.BASE_LR: 0.01 -> 0.5, SOLVER.MAX_ITER: 2 -> 4\n")
    assert "BASE_LR: 0.5" in text and "MAX_ITER: 4" in text
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert saved["iteration"] == 4 and saved["config"] == text  # a later resume compares with what ran
    log = open(os.path.join(out, "log.txt")).read()
    assert "resuming with TRAIN.LOG_PERIOD: 1 -> 2 (may change on resume)" in log
    assert "resuming with SOLVER.BASE_LR: 0.01 -> 0.5 (allowed by --allow-changes" in log


def test_max_iter_below_the_checkpoint_is_refused(finished, capsys):
    """It used to train nothing, exit 0 and leave config.yaml claiming MAX_ITER 1 beside an iteration-2 model."""
    cfg, out = finished
    assert train(cfg, "SOLVER.MAX_ITER", "1", flags=["--resume"]) == 2
    assert f"cannot resume from {out}/model_final.pth: SOLVER.MAX_ITER 1 is below its iteration 2" in one_line(capsys)
    assert "MAX_ITER: 2" in open(os.path.join(out, "config.yaml")).read()


def test_a_longer_step_schedule_resumed_is_the_longer_run(finished, data_root, tmp_path, capsys):
    """MAX_ITER may grow on resume when the schedule does not depend on it: 2 then 4 iterations end with the
    weights of a 4-iteration run. Under a cosine schedule (which MAX_ITER shapes) it is refused."""
    cfg, out = finished
    assert train(cfg, "SOLVER.LR_POLICY", "cosine", "SOLVER.MAX_ITER", "4", flags=["--resume"]) == 2
    assert "SOLVER.MAX_ITER: 2 -> 4; SOLVER.LR_POLICY: 'step' -> 'cosine'" in one_line(capsys)
    assert train(cfg, "SOLVER.MAX_ITER", "4", flags=["--resume"]) == 0
    straight = write_cfg(tmp_path / "straight.yaml", data_root, tmp_path / "straight")
    assert train(straight, "SOLVER.MAX_ITER", "4") == 0
    a = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_before_its_first_checkpoint_restarts_afresh(data_root, tmp_path, monkeypatch):
    """The killed run's metrics.jsonl rows (1, 2) used to stay in front of the new run's (1, 2, 3)."""
    from detection.engine.trainer import Trainer

    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, tmp_path / "out")
    original = Trainer.run_step

    def killed_at_3(self, iteration):
        if iteration == 2:
            raise KeyboardInterrupt("killed")
        return original(self, iteration)

    monkeypatch.setattr(Trainer, "run_step", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, "SOLVER.MAX_ITER", "3", "TRAIN.SNAPSHOT_ITERS", "0")
    out = tmp_path / "out"
    assert [r["iteration"] for r in rows(out)] == [1, 2] and not (out / "last_checkpoint").exists()
    monkeypatch.setattr(Trainer, "run_step", original)
    assert train(cfg, "SOLVER.MAX_ITER", "3", "TRAIN.SNAPSHOT_ITERS", "0") == 0
    assert [r["iteration"] for r in rows(out)] == [1, 2, 3]
    assert "dropped 2 record(s) after iteration 0 (of an earlier run that wrote no checkpoint)" in \
        open(out / "log.txt").read()
