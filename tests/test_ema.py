"""Weight EMA (SOLVER.EMA): the update rule against a float64 reference, BatchNorm buffers averaged and integer
buffers copied, frozen weights left exact, the checkpoint layout (averaged 'model', raw 'model_raw'), the averaged
model being the one train_net evaluates and saves, and exact kill-and-resume with the EMA (the 2-process resume
with EMA is in test_distributed.py)."""
import math
import os

import pytest
import torch
from torch import nn

from detection.engine.checkpoint import Checkpointer
from detection.engine.ema import ModelEMA


def _net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    net[0].weight.requires_grad_(False)  # a frozen layer
    return net


def _step(net, opt, seed):
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    loss = net(x).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_update_rule_bn_buffers_and_frozen_weights():
    """ema_n = d_n ema_{n-1} + (1 - d_n) w_n with d_n = decay (1 - exp(-n / tau)) for every floating-point entry
    (BatchNorm running statistics included, as YOLOv5 / timm / d2go do); num_batches_tracked is copied; the
    frozen conv weight stays bit for bit its value."""
    net = _net().train()
    ema = ModelEMA(net, decay=0.9, tau=3.0)
    assert ema.decay_at(1) == pytest.approx(0.9 * (1 - math.exp(-1 / 3)))
    ref = {k: v.double().clone() for k, v in net.state_dict().items()}
    frozen = net[0].weight.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    for n in range(1, 6):
        _step(net, opt, n)
        ema.update(net)
        d = 0.9 * (1 - math.exp(-n / 3.0))
        for k, v in net.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    got = ema.module.state_dict()
    assert ema.updates == 5
    for k, v in got.items():
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-6, atol=1e-7, msg=k)
    assert torch.equal(got["1.num_batches_tracked"], net[1].num_batches_tracked)
    assert not torch.allclose(got["1.running_mean"], net[1].running_mean)  # averaged, not copied
    assert not torch.allclose(got["4.weight"], net[4].weight)
    assert torch.equal(got["0.weight"], frozen)  # lerp towards an unchanged value is that value
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    assert ModelEMA(net, decay=0.9, tau=0).decay_at(1) == 0.9


def test_checkpoints_hold_the_average_as_model_and_resume_restores_both(tmp_path):
    net = _net()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    ema = ModelEMA(net, decay=0.8, tau=0)
    for n in range(3):
        _step(net, opt, n)
        ema.update(net)
    ckpt = Checkpointer(net, opt, output_dir=str(tmp_path), ema=ema)
    path = ckpt.save("model_0000003", 3)
    state = torch.load(path, weights_only=True)
    assert state["ema"] == {"updates": 3}
    for k, v in ema.module.state_dict().items():
        assert torch.equal(state["model"][k], v) and torch.equal(state["model_raw"][k], net.state_dict()[k])

    fresh = _net(seed=1)  # other weights, another EMA: both come back from the checkpoint
    fresh_opt = torch.optim.SGD([p for p in fresh.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    fresh_ema = ModelEMA(fresh, decay=0.8, tau=0)
    assert Checkpointer(fresh, fresh_opt, output_dir=str(tmp_path), ema=fresh_ema).resume() == 3
    assert fresh_ema.updates == 3
    for k in state["model"]:
        assert torch.equal(fresh.state_dict()[k], state["model_raw"][k])
        assert torch.equal(fresh_ema.module.state_dict()[k], state["model"][k])

    # a checkpoint without EMA: the average starts from its weights; a run without EMA takes the raw weights
    plain = Checkpointer(net, opt, output_dir=str(tmp_path / "plain"))
    os.makedirs(tmp_path / "plain")
    plain.save("model_0000003", 3)
    started = ModelEMA(_net(seed=2), decay=0.8, tau=0)
    Checkpointer(_net(seed=2), None, output_dir=str(tmp_path / "plain"), ema=started).resume()
    assert started.updates == 0 and torch.equal(started.module[4].weight, net[4].weight)
    raw_only = _net(seed=3)
    Checkpointer(raw_only, None, output_dir=str(tmp_path)).resume()
    assert torch.equal(raw_only[4].weight, net[4].weight) and not torch.equal(raw_only[4].weight, ema.module[4].weight)


EMA = ["SOLVER.EMA.ENABLED", "True", "SOLVER.EMA.DECAY", "0.7", "SOLVER.EMA.TAU", "2"]


def test_train_net_evaluates_and_saves_the_averaged_model(tmp_path, monkeypatch):
    """Every checkpoint's 'model' is the EMA of its 'model_raw' trajectory (recomputed from consecutive snapshots),
    the raw weights are those of the same run without EMA (EMA only reads them), and the final evaluation ran on
    the averaged weights."""
    import train_net
    from detection.engine import inference
    from test_tools import CLASSES, write_cfg  # noqa: F401
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset

    data = tmp_path / "data"
    generate_detection_dataset(str(data), DetectionParams(num_train=6, num_test=2, width=96, height=80, max_objects=2,
                                                          min_size=20, max_size=40), log=lambda m: None)
    evaluated = []
    original = inference.inference_on_dataset

    def spy(task, cfg, model, *args, **kwargs):
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return original(task, cfg, model, *args, **kwargs)

    monkeypatch.setattr(inference, "inference_on_dataset", spy)
    common = ["--no-progress", "--set", "TRAIN.SNAPSHOT_ITERS", "1", "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "[3]"]
    assert train_net.main(["--cfg", write_cfg(tmp_path / "ema.yaml", data, tmp_path / "ema"), *common, *EMA]) == 0
    assert train_net.main(["--cfg", write_cfg(tmp_path / "plain.yaml", data, tmp_path / "plain"), "--skip-eval",
                           *common]) == 0
    states = [torch.load(tmp_path / "ema" / f"model_{i:07d}.pth", weights_only=True) for i in (1, 2, 3)]
    states.append(torch.load(tmp_path / "ema" / "model_final.pth", weights_only=True))
    for n in (2, 3, 4):  # ema_n = lerp(ema_{n-1}, raw_n, 1 - d_n)
        w = 1 - 0.7 * (1 - math.exp(-n / 2))
        prev, cur = states[n - 2], states[n - 1]
        assert cur["ema"] == {"updates": n}
        for k, v in cur["model"].items():
            expected = torch.lerp(prev["model"][k], cur["model_raw"][k], w) if v.is_floating_point() else \
                cur["model_raw"][k]
            torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-7, msg=k)
    final = states[-1]
    plain = torch.load(tmp_path / "plain" / "model_final.pth", weights_only=True)
    assert "model_raw" not in plain and "ema" not in plain
    assert all(torch.equal(final["model_raw"][k], plain["model"][k]) for k in plain["model"])
    assert any(not torch.equal(final["model"][k], final["model_raw"][k]) for k in final["model"])
    assert len(evaluated) == 1 and all(torch.equal(evaluated[0][k], final["model"][k]) for k in final["model"])


@pytest.mark.parametrize("heads", [[], ["MODEL.ROI_HEADS.NAME", "cascade", "MODEL.CLASS_AGNOSTIC_BBOX_REG", "True"]],
                         ids=["standard", "cascade"])
def test_kill_and_resume_with_ema_ends_with_the_uninterrupted_runs_average(tmp_path, monkeypatch, heads):
    """Killed after iteration 4 and resumed: the raw weights, the average and its update count equal the
    uninterrupted run's, with the standard heads and with Cascade R-CNN's three stages."""
    import train_net
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset
    from detection.engine.trainer import Trainer
    from test_tools import write_cfg

    data = tmp_path / "data"
    generate_detection_dataset(str(data), DetectionParams(num_train=6, num_test=2, width=96, height=80, max_objects=2,
                                                          min_size=20, max_size=40), log=lambda m: None)
    common = ["--no-progress", "--skip-eval", "--set", *EMA, *heads]
    assert train_net.main(["--cfg", write_cfg(tmp_path / "full.yaml", data, tmp_path / "full"), *common]) == 0
    original = Trainer.run_step

    def killed_at_5(self, iteration):
        if iteration == 4:
            raise KeyboardInterrupt("killed")
        return original(self, iteration)

    cut = write_cfg(tmp_path / "cut.yaml", data, tmp_path / "cut")
    monkeypatch.setattr(Trainer, "run_step", killed_at_5)
    with pytest.raises(KeyboardInterrupt):
        train_net.main(["--cfg", cut, *common])
    monkeypatch.setattr(Trainer, "run_step", original)
    torch.manual_seed(999)
    assert train_net.main(["--cfg", cut, *common, "--resume"]) == 0
    a = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model_final.pth", weights_only=True)
    assert a["ema"] == b["ema"] == {"updates": 6}
    for key in ("model", "model_raw"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    mid = torch.load(tmp_path / "full" / "model_0000003.pth", weights_only=True)
    assert any(not torch.equal(mid["model"][k], a["model"][k]) for k in a["model"])  # the average moved on
