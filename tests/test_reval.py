"""tools/reval.py end to end, in-process (main(argv)), with VOC and COCO fixtures written here."""
import importlib.util
import json
import os

import numpy as np
import pytest

from detection.evaluation.voc import load_voc_ground_truth, voc_evaluate, write_voc_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_reval():
    spec = importlib.util.spec_from_file_location("reval_tool", os.path.join(ROOT, "tools", "reval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reval = _load_reval()


def write_voc(root, objects_by_image, split="test"):
    """Annotations/<id>.xml and ImageSets/Main/<split>.txt; objects: (name, xmin, ymin, xmax, ymax, difficult)."""
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
    for image_id, objects in objects_by_image.items():
        objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                       f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>" for n, a, b, c, e, d in objects)
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(f"<annotation><size><width>100</width><height>100</height></size>{objs}</annotation>")
    with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in objects_by_image))
    return root


OBJECTS = {
    "000001": [("horse", 1, 1, 40, 40, 0), ("person", 10, 5, 30, 60, 0), ("person", 50, 50, 60, 60, 1)],
    "000002": [("horse", 20, 20, 90, 80, 0), ("person", 1, 1, 20, 50, 0)],
    "000003": [("person", 30, 30, 70, 90, 0)],
}


def det(boxes, scores, labels):
    return dict(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), scores=np.asarray(scores, np.float32),
                labels=np.asarray(labels, np.int64))


DETS = [  # labels: 1 horse, 2 person (sorted class names)
    det([[0, 0, 40, 40], [9, 4, 30, 60], [49, 49, 60, 60], [0, 0, 38, 40]], [0.9, 0.85, 0.8, 0.7], [1, 2, 2, 1]),
    det([[19, 19, 90, 80], [60, 60, 90, 90], [0, 0, 20, 45]], [0.6, 0.75, 0.5], [1, 2, 2]),
    det([[29, 29, 60, 90], [0, 0, 5, 5]], [0.65, 0.95], [2, 1]),
]


@pytest.fixture()
def voc(tmp_path):
    root = write_voc(str(tmp_path / "VOCdevkit" / "VOC2007"), OBJECTS)
    ids, gt, names = load_voc_ground_truth(root, "test")
    dets_dir = str(tmp_path / "dets")
    write_voc_results(DETS, ids, names, dets_dir, "test")
    return root, dets_dir, gt, names


def test_voc_end_to_end(voc, tmp_path, capsys):
    root, dets_dir, gt, names = voc
    out = str(tmp_path / "voc.json")
    assert reval.main(["voc", "--root", root, "--split", "test", "--dets", dets_dir, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "VOC07 11-point AP, py-faster-rcnn rules (IoU > 0.5)" in printed and "horse" in printed
    result = json.load(open(out))
    expected = voc_evaluate(DETS, gt, names, use_07_metric=True)  # VOC2007: 11-point by default
    summary = f"mAP = {expected['mAP']:.4f} (VOC07 11-point AP, py-faster-rcnn rules (IoU > 0.5))"
    assert printed.splitlines()[-1] == summary
    assert set(result) == {"mAP", "AP", "voc_metric", "voc_rules"}
    assert result["voc_metric"] == "11-point" and result["voc_rules"] == "py-faster-rcnn"
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert result["AP"] == pytest.approx(expected["AP"], abs=1e-12)
    assert 0 < result["mAP"] < 1

    assert reval.main(["voc", "--root", root, "--dets", dets_dir, "--no-07-metric", "--out", out]) == 0
    area = voc_evaluate(DETS, gt, names, use_07_metric=False)
    assert json.load(open(out))["mAP"] == pytest.approx(area["mAP"], abs=1e-12)
    assert area["mAP"] != expected["mAP"]


def test_voc_rules_devkit(tmp_path, capsys):
    # one object VOC 1..100 x 1..10 and a detection over its left half: IoU exactly 0.5
    root = write_voc(str(tmp_path / "VOC2007"), {"000001": [("cat", 1, 1, 100, 10, 0)]})
    dets_dir = str(tmp_path / "dets")
    write_voc_results([det([[0, 0, 50, 10]], [0.9], [1])], ["000001"], ["cat"], dets_dir, "test")
    out = str(tmp_path / "r.json")
    assert reval.main(["voc", "--root", root, "--dets", dets_dir, "--out", out]) == 0
    assert json.load(open(out))["mAP"] == 0.0  # py-faster-rcnn: IoU > 0.5
    assert reval.main(["voc", "--root", root, "--dets", dets_dir, "--rules", "devkit", "--out", out]) == 0
    result = json.load(open(out))
    assert result["mAP"] == pytest.approx(1.0) and result["voc_rules"] == "devkit"  # VOCevaldet.m: IoU >= 0.5
    assert "devkit rules (IoU >= 0.5)" in capsys.readouterr().out
    assert "invalid choice" in _error(capsys, ["voc", "--root", root, "--dets", dets_dir, "--rules", "matlab"])


@pytest.mark.parametrize("year", ["2007", "2012"])
def test_reval_and_test_net_evaluator_agree(tmp_path, year):
    """The same detections, scored by reval.py and by the evaluator test_net builds from the default config,
    give the same mAP with the same metric (the year rule in both: 11-point for 2007, area for 2012)."""
    from detection.config import get_default_config
    from detection.engine.detection_task import DetectionTask

    devkit = tmp_path / "VOCdevkit"
    root = write_voc(str(devkit / f"VOC{year}"), OBJECTS)
    ids, _, names = load_voc_ground_truth(root, "test")
    dets_dir = str(tmp_path / "dets")
    write_voc_results(DETS, ids, names, dets_dir, "test")
    out = str(tmp_path / "reval.json")
    assert reval.main(["voc", "--root", root, "--dets", dets_dir, "--out", out]) == 0
    from_reval = json.load(open(out))

    cfg = get_default_config()
    cfg.DATA.ROOT, cfg.DATA.TEST_SET = str(devkit), f"{year}_test"

    class Dataset:  # what build_evaluator reads of the test dataset
        meta = {"format": "voc"}
        class_names = names

    evaluator = DetectionTask().build_evaluator(cfg, Dataset(), None)
    evaluator.process([dict(image_id=i) for i in ids], DETS)
    from_test_net = evaluator.evaluate()
    assert from_test_net["voc_metric"] == from_reval["voc_metric"] == ("11-point" if year == "2007" else "area")
    assert from_test_net["voc_rules"] == from_reval["voc_rules"] == "py-faster-rcnn"
    assert from_test_net["mAP"] == pytest.approx(from_reval["mAP"], abs=1e-12)
    assert 0 < from_reval["mAP"] < 1


def test_voc_classes_and_plots(voc, tmp_path, capsys):
    root, dets_dir, gt, names = voc
    out, plots = str(tmp_path / "person.json"), str(tmp_path / "plots")
    code = reval.main(["voc", "--root", root, "--dets", dets_dir, "--classes", "person", "--use-07-metric",
                       "--out", out, "--plots", plots])
    assert code == 0
    result = json.load(open(out))
    assert list(result["AP"]) == ["person"]
    full = voc_evaluate(DETS, gt, names, use_07_metric=True)
    assert result["AP"]["person"] == pytest.approx(full["AP"]["person"], abs=1e-12)
    assert os.listdir(plots) == ["pr_person.png"]
    # a class without objects: AP null in the JSON, left out of the mAP
    open(os.path.join(dets_dir, "comp4_det_test_cow.txt"), "w").close()
    assert reval.main(["voc", "--root", root, "--dets", dets_dir, "--classes", "person,cow", "--out", out]) == 0
    result = json.load(open(out))
    assert result["AP"]["cow"] is None and result["mAP"] == pytest.approx(full["AP"]["person"], abs=1e-12)


def _error(capsys, argv):
    code = reval.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_voc_errors(voc, tmp_path, capsys):
    root, dets_dir, _, _ = voc
    missing = str(tmp_path / "nowhere")
    assert missing in _error(capsys, ["voc", "--root", missing, "--dets", dets_dir])
    assert "results folder not found" in _error(capsys, ["voc", "--root", root, "--dets", missing])
    err = _error(capsys, ["voc", "--root", root, "--split", "val", "--dets", dets_dir])
    assert "val.txt: split file not found" in err
    err = _error(capsys, ["voc", "--root", root, "--dets", dets_dir, "--classes", "person,zebra"])
    assert "comp4_det_test_zebra.txt: results file not found" in err
    path = os.path.join(dets_dir, "comp4_det_test_horse.txt")
    lines = open(path).read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(lines[:2] + ["000001 0.5 1 1 10"]) + "\n")
    assert "comp4_det_test_horse.txt:3: expected" in _error(capsys, ["voc", "--root", root, "--dets", dets_dir])
    with open(path, "w") as f:
        f.write("000001 0.5 1 1 10 10\n000042 0.5 1 1 10 10\n")
    assert "comp4_det_test_horse.txt:2: unknown image id '000042'" in _error(
        capsys, ["voc", "--root", root, "--dets", dets_dir])
    # usage errors are argparse's (exit code 2 as well)
    _error(capsys, ["voc", "--root", root])
    _error(capsys, ["voc", "--root", root, "--dets", dets_dir, "--use-07-metric", "--no-07-metric"])
    _error(capsys, [])


# --------------------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------------------

def coco_files(tmp_path):
    pytest.importorskip("pycocotools")
    cats = [{"id": 2, "name": "bicycle"}, {"id": 7, "name": "train"}]
    anns = [{"id": 1, "image_id": 10, "category_id": 2, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [100, 80, 200, 150], "area": 30000, "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 2, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [50, 50, 100, 100], "area": 10000, "iscrowd": 1}]
    images = [{"id": 10, "width": 320, "height": 240}, {"id": 11, "width": 320, "height": 240}]
    res = [{"image_id": 10, "category_id": 2, "bbox": [11, 9, 50, 42], "score": 0.9},
           {"image_id": 10, "category_id": 7, "bbox": [90, 85, 200, 150], "score": 0.8},
           {"image_id": 11, "category_id": 2, "bbox": [6, 5, 20, 19], "score": 0.4},
           {"image_id": 11, "category_id": 7, "bbox": [60, 60, 50, 50], "score": 0.7},
           {"image_id": 11, "category_id": 2, "bbox": [200, 100, 30, 30], "score": 0.6}]
    ann_path, res_path = tmp_path / "instances.json", tmp_path / "results.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    res_path.write_text(json.dumps(res))
    return str(ann_path), str(res_path), res


def test_coco_end_to_end(tmp_path, capsys):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann, res, _ = coco_files(tmp_path)
    out = str(tmp_path / "coco.json")
    assert reval.main(["coco", "--ann", ann, "--dets", res, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "Average Precision" in printed and "bicycle" in printed
    result = json.load(open(out))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann)
        e = COCOeval(gt, gt.loadRes(res), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert list(result) == ["bbox"] and list(result["bbox"]) == names
    assert [result["bbox"][n] for n in names] == [float(v) for v in e.stats]


def test_coco_errors(tmp_path, capsys):
    ann, res, entries = coco_files(tmp_path)
    assert "missing.json: results file not found" in _error(
        capsys, ["coco", "--ann", ann, "--dets", str(tmp_path / "missing.json")])
    assert "nope.json: annotation file not found" in _error(
        capsys, ["coco", "--ann", str(tmp_path / "nope.json"), "--dets", res])
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    assert "bad.json: malformed JSON" in _error(capsys, ["coco", "--ann", ann, "--dets", str(bad)])
    assert "bad.json: malformed JSON" in _error(capsys, ["coco", "--ann", str(bad), "--dets", res])
    bad.write_text(json.dumps(entries + [dict(entries[0], category_id=3)]))
    assert "bad.json: entry 5: unknown category_id 3" in _error(capsys, ["coco", "--ann", ann, "--dets", str(bad)])
    bad.write_text(json.dumps([dict(entries[0], image_id=12)]))
    assert "bad.json: entry 0: unknown image_id 12" in _error(capsys, ["coco", "--ann", ann, "--dets", str(bad)])


def test_coco_empty_results(tmp_path, capsys):
    ann, res, _ = coco_files(tmp_path)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = str(tmp_path / "coco.json")
    assert reval.main(["coco", "--ann", ann, "--dets", str(empty), "--out", out]) == 0
    metrics = json.load(open(out))["bbox"]
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
