"""A class list given beside a checkpoint must be the one it was trained on (names and order): test_net, demo,
detection.load and reval.py refuse another, naming both lists (test_net used to score "circle" detections as
"ellipse" and print an mAP). A seeded, untrained tiny detector on a small generated dataset: seconds."""
import json
import os
import shutil

import pytest

import detection
from detection.engine.checkpoint import CheckpointError
import test_tools
from test_reval import _load_reval
from test_tools import CLASSES, write_cfg

test_tool, demo_tool = test_tools.test_tool, test_tools.demo_tool
SWAPPED = ["square", "circle", "triangle"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data root, config path, run folder with model_final.pth trained - here: seeded - on CLASSES)."""
    from detection.config import load_config
    from detection.datasets.synthetic import DetectionParams, generate_detection_dataset
    from model_fixtures import build_seeded, write_run_folder

    tmp = tmp_path_factory.mktemp("classes")
    data = str(tmp / "synthetic")
    generate_detection_dataset(data, DetectionParams(num_train=4, num_test=2, width=96, height=80, max_objects=2,
                                                     min_size=20, max_size=40), log=lambda m: None)
    cfg_path = write_cfg(tmp / "cfg.yaml", data, tmp / "run")
    cfg = load_config(cfg_path)
    folder = write_run_folder(str(tmp / "run"), cfg, build_seeded(cfg), CLASSES)
    return data, cfg_path, folder


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err[-2000:]
    return err


def test_test_net_refuses_a_reordered_class_list(run, tmp_path, capsys):
    data, cfg, folder = run
    ckpt = os.path.join(folder, "model_final.pth")
    common = ["--cfg", cfg, "--weights", ckpt, "--no-progress", "--output", str(tmp_path / "res")]
    assert test_tool.main([*common, "--set", "DATA.CLASSES", json.dumps(SWAPPED)]) == 2
    err = error_line(capsys)
    assert (f"{ckpt} was trained on the classes {CLASSES}, but DATA.CLASSES is {SWAPPED}: its labels would be "
            f"reported under other names") in err
    assert not (tmp_path / "res" / "metrics.json").exists()
    assert test_tool.main(common) == 0  # the checkpoint's own list
    assert json.load(open(tmp_path / "res" / "metrics.json"))["class_names"] == CLASSES  # recorded for reval.py


def test_test_net_refuses_a_test_set_whose_categories_are_in_another_order(run, tmp_path, capsys):
    """DATA.CLASSES [] on COCO data: the model's list comes from the training JSON; a test JSON whose category
    ids put the same names in another order would relabel every detection."""
    data, cfg, folder = run
    with open(os.path.join(data, "annotations", "instances_test.json")) as f:
        test = json.load(f)
    ids = {c["name"]: c["id"] for c in test["categories"]}
    swap = {ids["circle"]: ids["square"], ids["square"]: ids["circle"]}
    for c in test["categories"]:
        c["id"] = swap.get(c["id"], c["id"])
    for a in test["annotations"]:
        a["category_id"] = swap.get(a["category_id"], a["category_id"])
    (tmp_path / "swapped.json").write_text(json.dumps(test))
    shutil.copy(os.path.join(data, "annotations", "instances_trainval.json"), tmp_path / "trainval.json")
    images = os.path.join(data, "VOC2007", "JPEGImages")
    code = test_tool.main(["--cfg", cfg, "--weights", os.path.join(folder, "model_final.pth"), "--no-progress",
                           "--output", str(tmp_path / "res"), "--set", "DATA.FORMAT", "coco", "DATA.CLASSES", "[]",
                           "DATA.ROOT", str(tmp_path), "DATA.TRAIN_SETS", f"['trainval.json:{images}']",
                           "DATA.TEST_SET", f"swapped.json:{images}"])
    assert code == 2
    assert f"but the class list of swapped.json:{images} is {SWAPPED}" in error_line(capsys)


def test_demo_and_detection_load_refuse_another_class_list(run, tmp_path, capsys):
    data, cfg, folder = run
    ckpt = os.path.join(folder, "model_final.pth")
    image = os.path.join(data, "VOC2007", "JPEGImages", "000001.jpg")
    assert demo_tool.main(["--cfg", cfg, "--weights", ckpt, "--input", image, "--output", str(tmp_path / "demo"),
                           "--set", "DATA.CLASSES", '["ellipse", "star", "cross"]']) == 2
    assert "but DATA.CLASSES is ['ellipse', 'star', 'cross']" in error_line(capsys)
    with pytest.raises(CheckpointError, match=r"trained on the classes \['circle', 'square', 'triangle'\], but "
                                              r"DATA.CLASSES is \['square', 'circle', 'triangle'\]"):
        detection.load(folder, overrides=["DATA.CLASSES", json.dumps(SWAPPED)])
    assert detection.load(folder).class_names == CLASSES


def test_reval_refuses_classes_the_model_whose_results_these_are_does_not_have(run, tmp_path, capsys):
    """A results folder can hold stale files of another run; test_net records the model's classes beside its
    results, and reval.py --classes may only name those (files are matched by name: any subset, any order)."""
    data, cfg, folder = run
    res = tmp_path / "res"
    assert test_tool.main(["--cfg", cfg, "--weights", os.path.join(folder, "model_final.pth"), "--no-progress",
                           "--output", str(res)]) == 0
    (res / "comp4_det_test_ellipse.txt").write_text("")  # a stale file of an earlier run
    reval = _load_reval()
    voc = ["voc", "--root", os.path.join(data, "VOC2007"), "--split", "test", "--dets", str(res)]
    assert reval.main([*voc, "--classes", "circle,ellipse"]) == 2
    assert (f"--classes ['circle', 'ellipse'] names ['ellipse'], not in the class list {CLASSES} of the model whose "
            f"results these are ({res / 'metrics.json'})") in capsys.readouterr().err
    assert reval.main([*voc, "--classes", "square,circle"]) == 0


def test_no_class_list_given_takes_the_checkpoints(tmp_path):
    """MODEL.NUM_CLASSES with DATA.CLASSES [] gives no list (a classifier would make up class_0.. without its
    data folders): nothing to compare, the checkpoint's names are used."""
    from detection.config import get_default_config, merge_from_dict
    from model_fixtures import build_seeded, write_run_folder

    cfg = get_default_config()
    merge_from_dict(cfg, {"MODEL": {"META_ARCHITECTURE": "classifier", "BACKBONE": {"NAME": "tiny", "WEIGHTS": ""},
                                    "FREEZE_AT": 0, "NUM_CLASSES": 3, "CLS_HEAD": {"HIDDEN": [16]}},
                          "DATA": {"CLASSES": [], "ROOT": str(tmp_path / "no_data")}, "CLS": {"IMAGE_SIZE": 64}})
    folder = write_run_folder(str(tmp_path / "cls"), cfg, build_seeded(cfg), ["cat", "dog", "fox"])
    assert detection.load(folder).class_names == ["cat", "dog", "fox"]
