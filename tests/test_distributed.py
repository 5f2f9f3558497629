"""Two CPU processes with gloo through torchrun: DDP training, sharded evaluation, identical weights."""
import json
import os
import subprocess
import sys

import pytest
import torch

from test_tools import write_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


FPN = ["MODEL.NECK", "fpn", "MODEL.FPN.IN_STRIDES", "[4,8,16]", "MODEL.FPN.ANCHOR_SIZES", "[16,32,64,128]",
       "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_HEADS.BOX_HEAD", "mlp", "MODEL.ROI_HEADS.MLP_DIM", "128",
       "POOLING_SIZE", "7"]


CASCADE = ["MODEL.ROI_HEADS.NAME", "cascade", "MODEL.CLASS_AGNOSTIC_BBOX_REG", "True"]


@pytest.mark.slow
@pytest.mark.parametrize("neck", [[], FPN + CASCADE], ids=["c4", "fpn_cascade"])
def test_two_process_gloo_training_keeps_identical_weights(tmp_path, neck):
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset

    data = tmp_path / "data"
    generate_detection_dataset(str(data), DetectionParams(num_train=8, num_test=3, width=160, height=128,
                                                          max_objects=3, min_size=24, max_size=64),
                               log=lambda m: None)
    cfg = write_cfg(tmp_path / "cfg.yaml", data, tmp_path / "out")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "tools", "train_net.py"), "--cfg", cfg, "--no-progress",
           "--set", "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2", "DEVICE", "cpu", *neck]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    rank0, rank1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert "cpu x2" in rank0
    for log in (rank0, rank1):  # each process checked its weights against rank 0's
        assert "model weights identical on all 2 processes" in log
    state = torch.load(out / "model_final.pth", weights_only=True)
    assert state["iteration"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "eval/mAP" in r] == [2, 4]  # sharded periodic evaluation
    assert (out / "model_best.pth").is_file()
    assert json.loads((out / "inference" / "metrics.json").read_text())["AP"].keys() == {"circle", "square",
                                                                                         "triangle"}
    assert not (out / "model_final.pth.rank1").exists()  # rank 0 alone writes checkpoints


def test_a_single_process_torchrun_launch_joins_a_process_group(monkeypatch):
    # torchrun --nproc_per_node 1 is still a DDP run (torchvision's reference rule): on a GPU that is what makes
    # dev/gpu_check.sh's torchrun step exercise nccl. Here with gloo, in this process.
    import socket

    import torch.distributed as dist

    from detection.engine.distributed import get_world_size, init_distributed, is_distributed, launched_by_torchrun

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert not launched_by_torchrun() and init_distributed("cpu") is False and not is_distributed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    assert launched_by_torchrun()
    try:
        assert init_distributed("cpu") is True
        assert is_distributed() and get_world_size() == 1 and dist.get_backend() == "gloo"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


KILLER = """import os, signal, sys
import train_net  # tools/ is on PYTHONPATH
from detection.engine.distributed import get_rank
from detection.engine.trainer import Trainer

original = Trainer.run_step


def run_step(self, iteration):
    if iteration == {kill_at} and get_rank() == 0:  # after the checkpoint of iteration {kill_at}
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, iteration)


Trainer.run_step = run_step
sys.exit(train_net.main())
"""


@pytest.mark.slow
def test_two_process_kill_and_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """Rank 0 is SIGKILLed at iteration 4 (checkpoint at 3); the resumed 2-process run restores each rank's own
    RNG streams (the RPN and RoI samplers draw from them) and must end bit-identical to an uninterrupted run, the
    raw weights and their EMA (SOLVER.EMA on: every rank averages its own replica) alike."""
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset

    data = tmp_path / "data"
    generate_detection_dataset(str(data), DetectionParams(num_train=8, num_test=2, width=96, height=80,
                                                          max_objects=2, min_size=20, max_size=40),
                               log=lambda m: None)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tools")])}
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER.format(kill_at=3))

    def torchrun(script, cfg, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               "--cfg", cfg, "--no-progress", "--skip-eval", "--set", "DEVICE", "cpu",
               "TRAIN.BATCH_SIZE", "4", "TRAIN.RPN_BATCHSIZE", "8",  # small: the samplers must draw
               "SOLVER.EMA.ENABLED", "True", "SOLVER.EMA.DECAY", "0.7", "SOLVER.EMA.TAU", "0", *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    train_net = os.path.join(ROOT, "tools", "train_net.py")
    full = torchrun(train_net, write_cfg(tmp_path / "full.yaml", data, tmp_path / "full"))
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    cut_cfg = write_cfg(tmp_path / "cut.yaml", data, tmp_path / "cut")
    killed = torchrun(killer, cut_cfg)
    assert killed.returncode != 0 and not (tmp_path / "cut" / "model_final.pth").exists()
    assert (tmp_path / "cut" / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    saved = torch.load(tmp_path / "cut" / "model_0000003.pth", weights_only=True)
    ranks = saved["rng_per_rank"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # two streams to restore
    resumed = torchrun(train_net, cut_cfg, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    full = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "model_final.pth", weights_only=True)
    assert full["ema"] == cut["ema"] == {"updates": 6}
    for key in ("model_raw", "model"):  # the raw weights and the average
        a, b = full[key], cut[key]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), (key, [k for k in a if not torch.equal(a[k], b[k])][:5])
        moved = torch.load(tmp_path / "full" / "model_0000003.pth", weights_only=True)[key]
        assert any(not torch.equal(moved[k], a[k]) for k in a), key  # iterations 4-6 changed the weights
    for log in ("log.txt", "log.txt.rank1"):
        assert "model weights identical on all 2 processes" in (tmp_path / "cut" / log).read_text()


def _sampler_seed_on_rank(rank, init_file, out_dir):
    import torch.distributed as dist

    from detection.config import get_default_config
    from detection.data.build import build_detection_train_loader
    from detection.data.dataset import DetectionDataset

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)  # unseeded runs: every process starts from its own RNG state
        cfg = get_default_config()
        cfg.RNG_SEED, cfg.DATA.NUM_WORKERS, cfg.DATA.ASPECT_RATIO_GROUPING = -1, 0, False
        records = [dict(height=10, width=10, path=f"{i}.jpg") for i in range(8)]
        loader = build_detection_train_loader(cfg, DetectionDataset(records))
        sampler = loader.batch_sampler.sampler
        first = [int(i) for _, i in zip(range(4), iter(sampler))]
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"seed": sampler.seed, "first": first}, f)
    finally:
        dist.destroy_process_group()


def test_unseeded_runs_share_one_sampler_seed_so_the_shards_are_disjoint(tmp_path):
    """RNG_SEED -1: rank 0 draws the sampler seed and broadcasts it; with a seed per process the shards of the
    two ranks would overlap."""
    import torch.multiprocessing as mp

    mp.spawn(_sampler_seed_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["seed"] == r1["seed"]
    assert sorted(r0["first"] + r1["first"]) == list(range(8))  # one permutation, split between the ranks
