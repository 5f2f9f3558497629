"""Bad input through the tools (train_net, test_net, reval): one line naming the file, key or value and exit
code 2, never a traceback - for images that fail inside DataLoader workers, datasets and annotations the user
must fix, unusable checkpoints, unwritable outputs and a full disk - and what an interrupted run leaves behind
(stale temporary files). Tiny backbone, a few iterations."""
import errno
import json
import os
import shutil
import tempfile

import cv2
import numpy as np
import pytest
import torch

from fixtures_data import VOC_IMAGES, write_jpeg, write_voc_dataset
from test_loader import _garble_jpeg_body
from test_reval import _load_reval
from test_tools import write_cfg
import test_tools

train_tool, test_tool = test_tools.train_tool, test_tools.test_tool  # tools/train_net.py, tools/test_net.py

FAST = ["--no-progress", "--skip-eval", "--set", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "[1]",
        "SOLVER.WARMUP_ITERS", "0", "TRAIN.SNAPSHOT_ITERS", "1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset

    out = tmp_path_factory.mktemp("bad_inputs") / "synthetic"
    generate_detection_dataset(str(out), DetectionParams(num_train=4, num_test=2, width=96, height=80,
                                                         max_objects=2, min_size=20, max_size=40), log=lambda m: None)
    return str(out)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """(config, output dir) of a finished 2-iteration run (checkpoints at 1 and 2)."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = write_cfg(tmp / "cfg.yaml", data_root, tmp / "out")
    assert train_tool.main(["--cfg", cfg, *FAST]) == 0
    return cfg, str(tmp / "out")


def one_line_error(capsys, main, argv):
    """Run a tool; assert exit code 2 with a single `error: ...` line on stderr; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err[-3000:]
    return err


def copy_run(finished_run, data_root, tmp_path):
    """(config, output dir) of a copy of the finished run, to damage."""
    copy = tmp_path / "out"
    shutil.copytree(finished_run[1], copy)
    return write_cfg(tmp_path / "cfg.yaml", data_root, copy), copy


def _images(root, split):
    ids = open(os.path.join(root, "VOC2007", "ImageSets", "Main", f"{split}.txt")).read().split()
    return [os.path.join(root, "VOC2007", "JPEGImages", f"{i}.jpg") for i in ids]


def test_images_failing_in_loader_workers_give_one_line_and_exit_2(data_root, finished_run, tmp_path, capsys):
    """DATA.NUM_WORKERS 1: a JPEG with a garbled body (training) and a decoded size that differs from the
    annotation (test_net) are raised in a worker process; the tool prints the file and the reason only."""
    root = str(tmp_path / "data")
    shutil.copytree(data_root, root)
    rng = np.random.default_rng(1)
    for path in _images(root, "trainval"):
        h, w = cv2.imread(path).shape[:2]
        write_jpeg(path, cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2), quality=90)
        _garble_jpeg_body(path)
    cfg = write_cfg(tmp_path / "cfg.yaml", root, tmp_path / "out")
    err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, *FAST, "DATA.NUM_WORKERS", "1"])
    assert "cannot read image " + os.path.join(root, "VOC2007", "JPEGImages") in err and "Corrupt JPEG data" in err

    for path in _images(root, "test"):
        write_jpeg(path, np.full((20, 30, 3), 128, np.uint8))
    err = one_line_error(capsys, test_tool.main, ["--cfg", cfg, "--weights", os.path.join(finished_run[1],
                         "model_final.pth"), "--output", str(tmp_path / "res"), "--no-progress", "--set",
                                                  "DATA.NUM_WORKERS", "1"])
    assert "JPEGImages" in err and "decoded size 20x30 (HxW) differs from the annotation's" in err


def test_no_trainable_image_left_is_a_one_line_error(tmp_path, capsys):
    devkit = write_voc_dataset(tmp_path / "voc", images=[VOC_IMAGES[2], VOC_IMAGES[3]],  # empty, difficult only
                               splits={"trainval": ["000003", "000004"], "test": ["000003"]})
    cfg = write_cfg(tmp_path / "cfg.yaml", devkit, tmp_path / "out")
    err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, *FAST, "DATA.CLASSES", "['bird']"])
    assert "no images left in voc sets ['2007_trainval']" in err and "2 images skipped" in err


@pytest.mark.parametrize("damage,message", [
    ("missing", "COCO annotation file not found: {json}"),
    ("truncated", "{json}: malformed JSON at line"),
    ("bbox", "{json}: annotations[0] (id 1) bbox must be 4 finite numbers [x, y, w, h], got ['10', 5, 20, 20]"),
])
def test_coco_json_errors_with_classes_from_the_json(damage, message, data_root, tmp_path, capsys):
    """DATA.CLASSES [] (the README's COCO recipe) reads the categories from the training JSON first."""
    src = os.path.join(data_root, "annotations", "instances_trainval.json")
    path = str(tmp_path / "instances_train.json")
    text = open(src).read()
    if damage == "truncated":
        open(path, "w").write(text[: len(text) // 2])
    elif damage == "bbox":
        data = json.loads(text)
        data["annotations"][0].update(id=1, bbox=["10", 5, 20, 20])
        open(path, "w").write(json.dumps(data))
    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, tmp_path / "out")
    err = one_line_error(capsys, train_tool.main, [
        "--cfg", cfg, *FAST, "DATA.FORMAT", "coco", "DATA.CLASSES", "[]",
        "DATA.TRAIN_SETS", f"['{path}:VOC2007/JPEGImages']"])
    assert message.format(json=path) in err


class _Payload:
    """Any pickled object: torch.load(weights_only=True) must refuse it."""


@pytest.mark.parametrize("case,message", [
    ("truncated", "cannot read checkpoint {ckpt}:"),
    ("pickled", "cannot read checkpoint {ckpt}: it holds objects other than tensors"),
    ("list", "{ckpt} is not a training checkpoint"),
    ("empty_pointer", "{pointer} is empty"),
    ("architecture", "cannot resume from {ckpt} with a changed config: MODEL.ROI_HEADS.BOX_HEAD: 'backbone' -> "
                     "'mlp' (this cannot change in the middle of a run)"),
    ("architecture_allowed", "cannot resume from {ckpt}: it holds another model than the config builds"),
])
def test_resume_onto_an_unusable_checkpoint_is_a_one_line_error(case, message, finished_run, data_root, tmp_path,
                                                                capsys):
    cfg, out = copy_run(finished_run, data_root, tmp_path)
    ckpt, pointer = str(out / "model_final.pth"), str(out / "last_checkpoint")
    flags, sets = [], []  # sets: more --set pairs after FAST's (the run's own overrides)
    if case == "truncated":
        data = open(ckpt, "rb").read()
        open(ckpt, "wb").write(data[: len(data) // 2])
    elif case == "pickled":
        torch.save({"model": {}, "iteration": 2, "payload": _Payload()}, ckpt)
    elif case == "list":
        torch.save([torch.zeros(2)], ckpt)
    elif case == "empty_pointer":
        open(pointer, "w").close()
    else:
        sets = ["MODEL.ROI_HEADS.BOX_HEAD", "mlp"]
        if case == "architecture_allowed":
            flags = ["--allow-changes", "MODEL.ROI_HEADS.BOX_HEAD"]
    err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, "--resume", *flags, *FAST, *sets])
    assert message.format(ckpt=ckpt, pointer=pointer) in err
    if case.startswith("architecture"):
        assert "MODEL.ROI_HEADS.BOX_HEAD: 'backbone' -> 'mlp'" in err


def test_weights_holding_a_list_is_a_one_line_error(finished_run, data_root, tmp_path, capsys):
    cfg, _ = finished_run
    bad = str(tmp_path / "list.pth")
    torch.save([torch.zeros(2)], bad)
    err = one_line_error(capsys, test_tool.main, ["--cfg", cfg, "--weights", bad, "--no-progress",
                                                  "--output", str(tmp_path / "res")])
    assert f"{bad} holds a list, not a checkpoint or a state dict" in err
    new_cfg = write_cfg(tmp_path / "new.yaml", data_root, tmp_path / "new")
    err = one_line_error(capsys, train_tool.main, ["--cfg", new_cfg, "--no-progress", "--weights", bad])
    assert f"{bad} holds a list" in err


def test_unusable_output_dir_is_a_one_line_error(data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, blocker / "out")
    err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, *FAST])
    assert f"cannot write to {blocker / 'out'}: Not a directory" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        cfg = write_cfg(tmp_path / "cfg2.yaml", data_root, locked / "out")
        err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, *FAST])
        assert f"cannot write to {locked / 'out'}: Permission denied" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to simulate a full disk")
def test_full_disk_while_saving_a_checkpoint(data_root, tmp_path, capsys, monkeypatch):
    """Checkpoint writes go to /dev/full (ENOSPC from the kernel, under torch's own RuntimeError): one line naming
    the checkpoint, no temporary file left, last_checkpoint untouched."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp_on_a_full_disk(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        if path.endswith(".tmp") and ".pth." in os.path.basename(path):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_on_a_full_disk)
    out = tmp_path / "out"
    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, out)
    err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, *FAST])
    assert err == f"error: disk full while writing {out / 'model_0000001.pth'}"
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")] and not (out / "last_checkpoint").exists()
    monkeypatch.undo()
    with pytest.raises(OSError) as info:  # the scenario is real: the kernel's ENOSPC
        with open("/dev/full", "wb") as f:
            f.write(b"x")
            f.flush()
    assert info.value.errno == errno.ENOSPC


def test_full_disk_while_logging_metrics(data_root, tmp_path, capsys, monkeypatch):
    from detection.engine.trainer import Trainer

    def no_space(self, record):
        path = os.path.join(self.output_dir, "metrics.jsonl")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(Trainer, "_write_metrics", no_space)
    cfg = write_cfg(tmp_path / "cfg.yaml", data_root, tmp_path / "out")
    err = one_line_error(capsys, train_tool.main, ["--cfg", cfg, *FAST])
    assert err == f"error: disk full while writing {tmp_path / 'out' / 'metrics.jsonl'}"


def test_resume_removes_the_temporary_files_of_interrupted_writes(finished_run, data_root, tmp_path):
    cfg, out = copy_run(finished_run, data_root, tmp_path)
    stale = [out / "model_0000002.pth.k3j_x9qa.tmp", out / "last_checkpoint.0a1b2c3d.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    keep = out / "notes.tmp"  # not a name our writers use
    keep.write_text("mine")
    assert train_tool.main(["--cfg", cfg, "--resume", *FAST]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()
    assert "removed 2 temporary file(s)" in (out / "log.txt").read_text()


def test_reval_voc_on_a_binary_results_file_names_it(tmp_path, capsys):
    from test_reval import OBJECTS, write_voc

    root = write_voc(str(tmp_path / "VOCdevkit" / "VOC2007"), OBJECTS)
    dets = tmp_path / "dets"
    dets.mkdir()
    (dets / "comp4_det_test_horse.txt").write_text("000001 0.9 1 1 40 40\n")
    binary = dets / "comp4_det_test_person.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    capsys.readouterr()
    assert _load_reval().main(["voc", "--root", root, "--split", "test", "--dets", str(dets)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"reval.py: error: {binary}: not a text results file (byte 128 is not UTF-8)"
