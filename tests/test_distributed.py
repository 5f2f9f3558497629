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


@pytest.mark.slow
@pytest.mark.parametrize("neck", [[], FPN], ids=["c4", "fpn"])
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
    # tools/gpu_check.sh's torchrun step exercise nccl. Here with gloo, in this process.
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
