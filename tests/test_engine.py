"""Training engine: atomic checkpoints, exact resume, non-finite loss stop, schedules, optimizer state."""
import json
import math
import os

import pytest
import torch
from torch import nn

from detection.engine.checkpoint import Checkpointer, load_checkpoint_file, load_model_weights
from detection.engine.optim import WarmupDecay, build_lr_scheduler, build_optimizer
from detection.engine.trainer import NonFiniteLossError, Trainer
from detection.utils.atomic_io import atomic_torch_save


class ToyModel(nn.Module):
    """Follows the model contract: list of images + targets -> dict of losses (uses dropout: torch RNG)."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(12, 12)
        self.frozen.requires_grad_(False)
        self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, images, targets):
        x = torch.stack([img.flatten() for img in images])
        y = torch.stack([t["y"] for t in targets])
        pred = self.net(self.frozen(x)).squeeze(1)
        return {"loss_a": ((pred - y) ** 2).mean(), "loss_b": pred.abs().mean() * 0.01}


def batches(start_iter, poison_at=None, stop_at=None):
    """Deterministic batch per iteration, so a resumed run sees the same data as an uninterrupted one."""
    it = start_iter
    while True:
        if stop_at is not None and it == stop_at:
            raise KeyboardInterrupt("killed")
        g = torch.Generator().manual_seed(1000 + it)
        images = [torch.rand(3, 2, 2, generator=g) for _ in range(2)]
        targets = [{"y": torch.rand((), generator=g)} for _ in range(2)]
        if poison_at is not None and it == poison_at:
            images[0][0, 0, 0] = float("nan")
        yield images, targets
        it += 1


def make_trainer(out, start_iter=0, max_iter=10, **kw):
    torch.manual_seed(0)
    model = ToyModel()
    opt = build_optimizer(model.named_parameters(), "sgd", base_lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = build_lr_scheduler(opt, policy="step", max_iter=max_iter, steps=(6,), gamma=0.1, warmup_iters=3)
    ckpt = Checkpointer(model, opt, sched, output_dir=str(out), config_text="SEED: 0\n")
    trainer = Trainer(model, opt, sched, None, max_iter, str(out), ckpt, "cpu", snapshot_iters=5, log_period=1,
                      progress=False, **kw)
    return trainer


def test_kill_and_resume_ends_with_identical_weights(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.data_iter = batches(0)
    full.train(0)

    killed = make_trainer(tmp_path / "resumed")
    killed.data_iter = batches(0, stop_at=7)
    with pytest.raises(KeyboardInterrupt):
        killed.train(0)
    assert os.path.exists(tmp_path / "resumed" / "model_0000005.pth")

    resumed = make_trainer(tmp_path / "resumed")
    torch.manual_seed(12345)  # a fresh process would have another RNG state: resume must restore it
    start = resumed.checkpointer.resume()
    assert start == 5
    resumed.data_iter = batches(start)
    resumed.train(start)

    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    with open(tmp_path / "resumed" / "last_checkpoint") as f:
        assert f.read().strip() == "model_final.pth"
    # iterations 6 and 7 ran twice (killed after 7, resumed from 5): metrics.jsonl keeps each iteration once
    logged = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["iteration"] for r in logged] == list(range(1, 11))
    reference = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert [r["total_loss"] for r in logged] == [r["total_loss"] for r in reference]
    # TensorBoard: the resumed run's events hide the killed run's iterations 6 and 7 (purge_step)
    full_events, resumed_events = (read_scalars(tmp_path / d / "tensorboard", "total_loss") for d in ("full", "resumed"))
    assert [step for step, _ in resumed_events] == list(range(1, 11))
    assert resumed_events == full_events == [(r["iteration"], pytest.approx(r["total_loss"])) for r in reference]


def read_scalars(log_dir, tag):
    """[(step, value)] of one scalar tag, read back from the event files in `log_dir` as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.data_iter = batches(0, poison_at=6)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.train(0)
    msg = str(err.value)
    assert "iteration 7" in msg and "loss_a=nan" in msg and "model_0000005.pth" in msg
    state = load_checkpoint_file(str(tmp_path / "model_0000005.pth"))
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not os.path.exists(tmp_path / "model_final.pth")


def test_metrics_jsonl_and_checkpoint_contents(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=4)
    trainer.data_iter = batches(0)
    trainer.train(0)
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4]
    assert {"loss_a", "loss_b", "total_loss", "lr", "time"} <= set(lines[0])
    state = load_checkpoint_file(str(tmp_path / "model_final.pth"))
    assert state["iteration"] == 4 and state["config"] == "SEED: 0\n"
    assert {"model", "optimizer", "scheduler", "rng"} <= set(state)


def test_frozen_parameters_get_no_optimizer_state(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=2)
    trainer.data_iter = batches(0)
    trainer.train(0)
    frozen = {id(p) for p in trainer.model.frozen.parameters()}
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not frozen & in_optimizer
    assert all(id(p) not in frozen for p in trainer.optimizer.state)


def test_atomic_save_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"a": torch.ones(2)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": Unpicklable()}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_load_model_weights_errors(tmp_path):
    model = ToyModel()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_model_weights(model, str(tmp_path / "missing.pth"))
    bad = {k: torch.zeros(3) for k in model.state_dict()}
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_model_weights(model, str(tmp_path / "bad.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.pth"):
        load_model_weights(model, str(tmp_path / "garbage.pth"))


def test_warmup_then_step_and_cosine():
    step = WarmupDecay("step", max_iter=100, steps=(50, 80), gamma=0.1, warmup_iters=10, warmup_factor=0.1)
    assert step(0) == pytest.approx(0.1)
    assert step(5) == pytest.approx(0.55)
    assert step(10) == 1.0 and step(49) == 1.0
    assert step(50) == pytest.approx(0.1) and step(80) == pytest.approx(0.01)
    cos = WarmupDecay("cosine", max_iter=100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="LR_POLICY"):
        WarmupDecay("poly")
    assert math.isclose(WarmupDecay("constant")(7), 1.0)


def test_optimizer_choices_and_errors():
    model = ToyModel()
    assert isinstance(build_optimizer(model.named_parameters(), "adam", base_lr=1e-3), torch.optim.Adam)
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(model.named_parameters(), "rmsprop")
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model.named_parameters(), "sgd")
