"""train_net / test_net / demo end to end on a generated VOC+COCO dataset (tiny backbone, few iterations):
outputs and their schemas, exact kill-and-resume with the real loader, the non-finite stop, TTA, and the tools'
errors for bad arguments. The 2-process DDP run is in test_distributed.py."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import demo as demo_tool
import learned
import test_net as test_tool
import train_net as train_tool

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset

    out = tmp_path_factory.mktemp("data") / "synthetic"
    generate_detection_dataset(str(out), DetectionParams(num_train=10, num_test=4, width=160, height=128,
                                                         max_objects=3, min_size=24, max_size=64), log=lambda m: None)
    return str(out)


def write_cfg(path, root, out, **extra):
    lines = [
        "MODEL: {BACKBONE: {NAME: tiny, WEIGHTS: ''}, FREEZE_AT: 0}",  # random init: every stage trains
        "ANCHOR_SCALES: [1, 2, 4]",  # 16-64 px anchors for the 24-64 px objects (larger ones all cross the border)
        f"DATA: {{ROOT: '{root}', CLASSES: {CLASSES}, NUM_WORKERS: 0}}",
        "TRAIN: {SCALES: [128], MAX_SIZE: 160, IMS_PER_BATCH: 2, SNAPSHOT_ITERS: 3, LOG_PERIOD: 1, "
        "RPN_PRE_NMS_TOP_N: 300, RPN_POST_NMS_TOP_N: 100, BATCH_SIZE: 32}",
        "TEST: {SCALES: [128], MAX_SIZE: 160, RPN_PRE_NMS_TOP_N: 300, RPN_POST_NMS_TOP_N: 50}",
        "SOLVER: {MAX_ITER: 6, BASE_LR: 0.01, STEPS: [4], WARMUP_ITERS: 2}",
        f"OUTPUT_DIR: '{out}'",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# The shared run: 400 iterations (~17 s of training on one core), evaluated on its own 10 training images. It is
# trained to convergence on purpose: at 120 iterations the mAP depended on the CPU's instruction set and thread
# count (0.66 - 0.82 here, 0.74 on an AVX-512 Xeon), at 400 it is 0.9697 under AVX2 and SSE4.1 kernels, at 1 and
# 2 threads, and with RNG_SEED 1..4 (dev/quality_spread.py, docs/benchmarks.md "Learned-quality thresholds").
TRAINED = ["SOLVER.MAX_ITER", "400", "SOLVER.STEPS", "[300]", "SOLVER.BASE_LR", str(learned.lr(0.02)),
           "SOLVER.WARMUP_ITERS", "10", "TRAIN.SNAPSHOT_ITERS", "200", "TRAIN.LOG_PERIOD", "100",
           "DATA.TEST_SET", "2007_trainval"]
# The thresholds (dev/quality_spread.py, 2026-12-07): the mAP was 0.9697 under AVX2 and SSE4.1 kernels at 1 and 2
# threads (no spread); 0.85 leaves 0.12 for CPUs not measured. The last logged loss over the first: 0.033 - 0.062
# there, 1.09 with learning rate 0 (which also scores mAP 0.0).
TRAINED_MAP = 0.85
LOSS_RATIO = 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset_root):
    """One training run shared by the output tests: (config path, output dir)."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = write_cfg(tmp / "cfg.yaml", dataset_root, tmp / "out")
    assert train_tool.main(["--cfg", cfg, "--no-progress", "--set", *TRAINED]) == 0
    return cfg, str(tmp / "out")


def test_train_net_writes_checkpoints_metrics_and_evaluation(trained):
    cfg, out = trained
    for name in ("config.yaml", "model_summary.txt", "metrics.jsonl", "log.txt", "model_0000200.pth",
                 "model_final.pth", "inference/metrics.json", "inference/comp4_det_trainval_circle.txt"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    iters = [r["iteration"] for r in records if "total_loss" in r]
    assert iters == [1, 100, 200, 300, 400]
    assert all(np.isfinite(r["total_loss"]) and set(r) >= {"loss_rpn_cls", "loss_cls", "lr"} for r in records)
    loss_ratio = records[-1]["total_loss"] / records[0]["total_loss"]
    metrics = json.load(open(os.path.join(out, "inference", "metrics.json")))
    learned.report("train_net_shared_run_loss_ratio", loss_ratio, LOSS_RATIO, higher_is_better=False)
    learned.report("train_net_shared_run_mAP", metrics["mAP"], TRAINED_MAP)
    assert loss_ratio < LOSS_RATIO and records[-1]["loss_rpn_cls"] > 0
    from test_engine import read_scalars  # the README's promise: TensorBoard event files in OUTPUT_DIR/tensorboard

    for tag in ("total_loss", "loss_cls", "lr"):
        logged = read_scalars(os.path.join(out, "tensorboard"), tag)
        assert logged == [(r["iteration"], pytest.approx(r[tag])) for r in records], tag
    state = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert state["iteration"] == 400 and state["extra"]["class_names"] == CLASSES
    assert "optimizer" in state and "scheduler" in state and "rng" in state
    assert set(metrics["AP"]) == set(CLASSES)
    assert metrics["mAP"] >= TRAINED_MAP, metrics["AP"]  # it learned the shapes


def test_train_net_refuses_to_overwrite_and_resume_of_a_finished_run_does_nothing(trained, capsys):
    cfg, out = trained
    assert train_tool.main(["--cfg", cfg, "--no-progress", "--skip-eval"]) == 2
    assert "--resume" in capsys.readouterr().err
    before = os.path.getmtime(os.path.join(out, "model_final.pth"))
    assert train_tool.main(["--cfg", cfg, "--no-progress", "--skip-eval", "--resume", "--set", *TRAINED]) == 0
    assert os.path.getmtime(os.path.join(out, "model_final.pth")) == before


def test_test_net_with_tta_writes_metrics_predictions_and_voc_files(trained, tmp_path, capsys):
    cfg, out = trained
    res = tmp_path / "tta"
    code = test_tool.main(["--cfg", cfg, "--weights", os.path.join(out, "model_final.pth"), "--output", str(res),
                           "--no-progress", "--set", "TEST.SCALES", "[112,128]", "TEST.FLIP", "True",
                           "TEST.SCORE_THRESH", "0.0", "DATA.TEST_SET", "2007_test"])
    assert code == 0
    metrics = json.load(open(res / "metrics.json"))
    assert metrics["test_scales"] == [112, 128] and metrics["flip"] is True and metrics["images"] == 4
    # which VOC metric and rules the mAP is: TEST.VOC_07_METRIC auto on VOC2007 -> 11-point, TEST.VOC_RULES
    assert metrics["voc_metric"] == "11-point" and metrics["voc_rules"] == "py-faster-rcnn"
    assert "(VOC 11-point metric, py-faster-rcnn rules)" in capsys.readouterr().out
    preds = json.load(open(res / "predictions.json"))
    assert len(preds) == 4
    for p in preds:
        img = cv2.imread(p["file"])
        h, w = img.shape[:2]
        assert 0 < len(p["detections"]) <= 100
        for d in p["detections"]:
            x1, y1, x2, y2 = d["box_xyxy"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
            assert d["class"] in CLASSES and 0.0 <= d["score"] <= 1.0
    for c in CLASSES:
        assert (res / f"comp4_det_test_{c}.txt").is_file() and (res / f"pr_{c}.png").is_file()


def test_test_net_analyze_writes_the_error_report_and_analyze_results_repeats_it(trained, tmp_path, capsys):
    import analyze_results

    cfg, _ = trained
    assert test_tool.main(["--cfg", cfg, "--output", str(tmp_path), "--no-progress", "--analyze", "--num-worst", "3"]) == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert summary["images"] == 4 and (tmp_path / "analysis" / "report.html").is_file()
    assert (tmp_path / "config.yaml").is_file()  # so that analyze_results finds the ground truth by itself
    assert analyze_results.main([str(tmp_path), "--output", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "analysis.json").read_text())["tide"] == summary["tide"]


def test_test_net_fast_gives_the_eager_evaluation(trained, tmp_path):
    """test_net --fast (BatchNorm folded, channels_last, Winograd heads, inference_mode) scores the run's own
    evaluation images as the eager evaluation train_net wrote: the same APs up to float rounding."""
    cfg, out = trained
    res = tmp_path / "fast"
    assert test_tool.main(["--cfg", cfg, "--fast", "--output", str(res), "--no-progress", "--set",
                           "DATA.TEST_SET", "2007_trainval"]) == 0
    eager = json.load(open(os.path.join(out, "inference", "metrics.json")))
    fast = json.load(open(res / "metrics.json"))
    assert eager["mAP"] >= TRAINED_MAP and set(fast["AP"]) == set(CLASSES)
    for c in CLASSES:
        assert abs(fast["AP"][c] - eager["AP"][c]) <= 1e-3, (c, fast["AP"], eager["AP"])


def test_test_net_on_the_coco_json_of_the_same_images(trained, dataset_root, tmp_path):
    cfg, out = trained
    res = tmp_path / "coco"
    code = test_tool.main(["--cfg", cfg, "--output", str(res), "--no-progress", "--set", "DATA.FORMAT", "coco",
                           "DATA.TEST_SET", "annotations/instances_test.json:VOC2007/JPEGImages"])
    assert code == 0  # no --weights: OUTPUT_DIR's last checkpoint
    metrics = json.load(open(res / "metrics.json"))
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75"} and metrics["mAP"] == metrics["bbox"]["AP50"]
    results = json.load(open(res / "coco_instances_results.json"))
    assert all(r["category_id"] in (1, 3, 7) for r in results)  # the generator's non-contiguous ids


def test_demo_draws_images_and_writes_json(trained, dataset_root, tmp_path):
    cfg, out = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    src = os.path.join(dataset_root, "VOC2007", "JPEGImages")
    for name in sorted(os.listdir(src))[:2]:
        (folder / name).write_bytes(open(os.path.join(src, name), "rb").read())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = tmp_path / "demo"
    code = demo_tool.main(["--cfg", cfg, "--input", str(folder), "--output", str(res), "--score-thresh", "0.0"])
    assert code == 1  # the broken image is reported, the others are drawn
    data = json.load(open(res / "detections.json"))
    assert data["class_names"] == CLASSES and len(data["images"]) == 2
    assert data["unreadable"] == [str(folder / "broken.jpg")]
    for entry in data["images"]:
        drawn = cv2.imread(entry["output"])
        assert drawn is not None and drawn.shape[:2] == (entry["height"], entry["width"])
        for d in entry["detections"]:
            x1, y1, x2, y2 = d["box_xyxy"]
            assert 0 <= x1 <= x2 <= entry["width"] and 0 <= y1 <= y2 <= entry["height"]
    only = tmp_path / "one"
    assert demo_tool.main(["--cfg", cfg, "--input", entry["file"], "--output", str(only)]) == 0
    assert len(json.load(open(only / "detections.json"))["images"]) == 1


def test_kill_and_resume_with_the_real_loader_ends_with_identical_weights(dataset_root, tmp_path, monkeypatch):
    """Augmentation on (flip + colour jitter + crop), one loader worker: the resumed run must see the same
    batches, augmentations and RNG draws as the uninterrupted one."""
    from detection.engine.trainer import Trainer

    aug = {"AUG": "{COLOR_JITTER: true, RANDOM_CROP: true}"}
    full_cfg = write_cfg(tmp_path / "full.yaml", dataset_root, tmp_path / "full", **aug)
    cut_cfg = write_cfg(tmp_path / "cut.yaml", dataset_root, tmp_path / "cut", **aug)
    common = ["--no-progress", "--skip-eval", "--set", "DATA.NUM_WORKERS", "1"]
    assert train_tool.main(["--cfg", full_cfg, *common]) == 0

    original = Trainer.run_step

    def killed_at_5(self, iteration):
        if iteration == 4:
            raise KeyboardInterrupt("killed")
        return original(self, iteration)

    monkeypatch.setattr(Trainer, "run_step", killed_at_5)
    with pytest.raises(KeyboardInterrupt):
        train_tool.main(["--cfg", cut_cfg, *common])
    monkeypatch.setattr(Trainer, "run_step", original)
    assert open(tmp_path / "cut" / "last_checkpoint").read().strip() == "model_0000003.pth"
    torch.manual_seed(999)  # the resumed process starts with another RNG state
    assert train_tool.main(["--cfg", cut_cfg, *common, "--resume"]) == 0

    a = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model_final.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    changed = torch.load(tmp_path / "full" / "model_0000003.pth", weights_only=True)["model"]
    assert any(not torch.equal(changed[k], a["model"][k]) for k in a["model"])  # training did move the weights


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(dataset_root, tmp_path, monkeypatch, caplog):
    from detection.engine import detection_task

    original = detection_task.DetectionTask.build_model

    def poisoned(self, cfg):
        model = original(self, cfg)
        calls = {"n": 0}

        def hook(module, args, output):
            if not module.training:  # e.g. the summary's pass
                return output
            calls["n"] += 1
            if calls["n"] == 5:  # the 5th training forward
                output["loss_box"] = output["loss_box"] * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(detection_task.DetectionTask, "build_model", poisoned)
    cfg = write_cfg(tmp_path / "cfg.yaml", dataset_root, tmp_path / "out")
    assert train_tool.main(["--cfg", cfg, "--no-progress"]) == 1
    log = open(tmp_path / "out" / "log.txt").read()
    assert "non-finite loss at iteration 5" in log and "loss_box=nan" in log and "model_0000003.pth" in log
    assert open(tmp_path / "out" / "last_checkpoint").read().strip() == "model_0000003.pth"
    assert not os.path.exists(tmp_path / "out" / "model_final.pth")


@pytest.mark.parametrize("tool,argv,message", [
    ("train", ["--cfg", "missing.yaml"], "no such file"),
    ("train", ["--cfg", "{cfg}", "--set", "SOLVER.MAX_ITERS", "5"], "SOLVER.MAX_ITER"),
    ("train", ["--cfg", "{cfg}", "--set", "SOLVER.MAX_ITER"], "KEY VALUE pairs"),
    ("train", ["--cfg", "{cfg}", "--set", "SOLVER.MAX_ITER", "many"], "SOLVER.MAX_ITER"),
    ("train", ["--cfg", "{cfg}", "--resume", "--weights", "{cfg}"], "pick one"),
    ("train", ["--cfg", "{cfg}", "--device", "tpu"], "tpu"),
    ("train", ["--cfg", "{cfg}", "--set", "DATA.ROOT", "/nonexistent/data"], "/nonexistent/data"),
    ("test", ["--cfg", "{cfg}"], "no --weights given"),
    ("test", ["--cfg", "{cfg}", "--weights", "nope.pth"], "nope.pth"),
    ("test", ["--cfg", "{cfg}", "--weights", "{bad_ckpt}"], "cannot load --weights"),
    ("demo", ["--cfg", "{cfg}", "--weights", "{ckpt}", "--input", "/nonexistent/*.jpg"], "/nonexistent"),
    ("demo", ["--cfg", "{cfg}", "--weights", "{ckpt}", "--input", "{data}", "--score-thresh", "2"],
     "--score-thresh"),
])
def test_tools_reject_bad_arguments_with_exit_code_2(tool, argv, message, dataset_root, trained, tmp_path, capsys):
    cfg = write_cfg(tmp_path / "cfg.yaml", dataset_root, tmp_path / "empty_out")
    bad_ckpt = tmp_path / "bad.pth"
    torch.save({"model": {"backbone.0.weight": torch.zeros(1)}}, bad_ckpt)
    fill = dict(cfg=cfg, bad_ckpt=str(bad_ckpt), ckpt=os.path.join(trained[1], "model_final.pth"),
                data=os.path.join(dataset_root, "VOC2007", "JPEGImages"))
    argv = [a.format(**fill) for a in argv]
    main = {"train": train_tool.main, "test": test_tool.main, "demo": demo_tool.main}[tool]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_required_argument_is_an_argparse_error():
    with pytest.raises(SystemExit) as info:
        demo_tool.main(["--cfg", "x.yaml"])
    assert info.value.code == 2


def test_weights_fine_tunes_to_another_class_list(trained, dataset_root, tmp_path):
    """--weights from a 3-class run into a 4-class model (a class the data does not have yet): the class layers
    keep their initialisation, the rest is loaded."""
    cfg, out = trained
    source = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]
    new_cfg = write_cfg(tmp_path / "ft.yaml", dataset_root, tmp_path / "ft")
    code = train_tool.main(["--cfg", new_cfg, "--no-progress", "--skip-eval", "--weights",
                            os.path.join(out, "model_final.pth"), "--set", "DATA.CLASSES", "['circle','square','triangle','star']",
                            "SOLVER.MAX_ITER", "1", "SOLVER.BASE_LR", "0.0"])
    assert code == 0
    tuned = torch.load(tmp_path / "ft" / "model_final.pth", weights_only=True)["model"]
    assert tuned["roi_heads.cls_score.weight"].shape[0] == 5  # 4 classes + background
    assert torch.equal(tuned["backbone.0.0.weight"], source["backbone.0.0.weight"])  # lr 0: loaded, unchanged
    log = open(tmp_path / "ft" / "log.txt").read()
    assert "roi_heads.cls_score.weight" in log and "left at their initialisation" in log


def test_weights_of_another_architecture_is_an_error(trained, dataset_root, tmp_path, capsys):
    cfg, out = trained
    other = tmp_path / "other.pth"
    torch.save({"model": {"something.else": torch.zeros(3)}}, other)
    new_cfg = write_cfg(tmp_path / "ft.yaml", dataset_root, tmp_path / "ft")
    assert train_tool.main(["--cfg", new_cfg, "--no-progress", "--weights", str(other)]) == 2
    assert "cannot initialise the model from --weights" in capsys.readouterr().err


def test_quickstart_script_runs_every_step(tmp_path, capsys):
    """tools/quickstart.py (what `make demo` runs) end to end with a tiny model: dataset, train, test, demo,
    contact sheet and the printed summary."""
    import quickstart

    cfg = tmp_path / "qs.yaml"
    data = tmp_path / "synthetic"
    cfg.write_text(f"_BASE_: {os.path.join(ROOT, 'configs', 'quickstart.yaml')}\n"
                   "MODEL: {BACKBONE: {NAME: tiny, WEIGHTS: ''}, ROI_HEADS: {BOX_HEAD: backbone}}\n"
                   f"DATA: {{ROOT: '{data}', NUM_WORKERS: 0}}\n"
                   "SOLVER: {MAX_ITER: 2, STEPS: [1], WARMUP_ITERS: 0}\n"
                   f"OUTPUT_DIR: '{tmp_path / 'out'}'\n")
    assert quickstart.main(["--cfg", str(cfg), "--num-demo", "3"]) == 0
    printed = capsys.readouterr().out
    assert "mAP@0.5 on the 60 held-out test images" in printed and "contact sheet:" in printed
    sheet = cv2.imread(str(tmp_path / "out" / "demo" / "contact_sheet.jpg"))
    assert sheet is not None and sheet.shape[1] > 3 * 320
    assert len(json.load(open(tmp_path / "out" / "demo" / "detections.json"))["images"]) == 3
    assert quickstart.main(["--cfg", str(cfg), "--num-demo", "1"]) == 0  # a second run reuses data and model
    assert "from 2" in open(tmp_path / "out" / "log.txt").read()
