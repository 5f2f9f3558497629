"""COCO evaluation: our numbers against pycocotools' COCOeval run directly on the same files."""
import contextlib
import io
import json

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from detection.evaluation.coco import (  # noqa: E402
    COCO_METRIC_NAMES,
    COCOEvaluator,
    coco_evaluate,
    detections_to_coco_results,
)
from detection.evaluation.evaluator import EvaluationInputError  # noqa: E402

# non-contiguous category ids, as in COCO (label 1 -> 1, 2 -> 3, 3 -> 18)
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def _ann(ann_id, image_id, cat, x, y, w, h, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
            "iscrowd": crowd, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def coco_gt_dict():
    """Small (area < 32^2), medium and large objects of every category, and a crowd box."""
    anns = [
        _ann(1, 1, 1, 10, 10, 20, 30),      # small person
        _ann(2, 1, 3, 100, 100, 60, 50),    # medium car
        _ann(3, 1, 18, 200, 50, 150, 120),  # large dog
        _ann(4, 5, 1, 50, 60, 80, 200),     # large person
        _ann(5, 5, 1, 300, 300, 200, 150, crowd=1),  # a crowd of people
        _ann(6, 5, 3, 400, 20, 25, 25),     # small car
        _ann(7, 7, 18, 30, 30, 70, 90),     # medium dog
        _ann(8, 7, 18, 150, 150, 40, 40),   # medium dog
    ]
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i:012d}.jpg"} for i in (1, 5, 7)]
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def coco_results():
    rng = np.random.default_rng(0)
    out = []
    for a in coco_gt_dict()["annotations"]:
        x, y, w, h = a["bbox"]
        out.append({"image_id": a["image_id"], "category_id": a["category_id"],
                    "bbox": [x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3)), w, h],
                    "score": float(rng.random())})
    out += [
        {"image_id": 1, "category_id": 1, "bbox": [12, 11, 20, 30], "score": 0.31},       # duplicate
        {"image_id": 5, "category_id": 1, "bbox": [320, 310, 60, 80], "score": 0.95},     # inside the crowd
        {"image_id": 7, "category_id": 3, "bbox": [500, 400, 50, 40], "score": 0.7},      # false positive
        {"image_id": 7, "category_id": 18, "bbox": [160, 140, 45, 50], "score": 0.2},
    ]
    return out


@pytest.fixture()
def coco_files(tmp_path):
    ann = tmp_path / "instances.json"
    res = tmp_path / "results.json"
    ann.write_text(json.dumps(coco_gt_dict()))
    res.write_text(json.dumps(coco_results()))
    return str(ann), str(res)


def pycocotools_stats(ann_path, res_path, img_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_path)
        dt = gt.loadRes(res_path)
        e = COCOeval(gt, dt, "bbox")
        if img_ids is not None:
            e.params.imgIds = img_ids
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(v) for v in e.stats]


def test_twelve_numbers_equal_cocoeval(coco_files, capsys):
    ann, res = coco_files
    result = coco_evaluate(ann, res)
    assert list(result["metrics"]) == list(COCO_METRIC_NAMES)
    expected = pycocotools_stats(ann, res)
    assert list(result["metrics"].values()) == expected
    assert 0 < result["metrics"]["AP"] < 1 and all(v >= 0 for v in expected)
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured
    lines = result["summary"].splitlines()
    assert len(lines) == 12 and lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95")
    assert set(result["per_class_AP"]) == {"person", "car", "dog"}


def test_evaluator_maps_labels_to_category_ids(coco_files, tmp_path):
    ann, _ = coco_files
    # contiguous labels 1..3 -> category ids 1, 3, 18; boxes xyxy continuous -> [x, y, w, h]
    det = dict(boxes=np.array([[10, 10, 30, 40], [100, 100, 160, 150]], np.float32),
               scores=np.array([0.9, 0.8], np.float32), labels=np.array([1, 2]))
    res = detections_to_coco_results([det], [1], [1, 3, 18])
    assert [r["category_id"] for r in res] == [1, 3]
    assert res[1]["bbox"] == [100.0, 100.0, 60.0, 50.0] and res[0]["image_id"] == 1

    ev = COCOEvaluator(ann, output_dir=str(tmp_path / "out"))
    ev.reset()
    dets = {1: det, 5: dict(boxes=np.array([[50, 60, 130, 260]]), scores=np.array([0.7]), labels=np.array([1])),
            7: dict(boxes=np.array([[30, 30, 100, 120], [0, 0, 5, 5]]), scores=np.array([0.6, 0.9]),
                    labels=np.array([3, 2]))}
    ev.process([{"image_id": 1}, {"image_id": "5"}], [dets[1], dets[5]])  # str ids of the COCO ids work too
    ev.process([{"image_id": np.int64(7)}], [dets[7]])
    metrics = ev.evaluate()
    path = str(tmp_path / "out" / COCOEvaluator.RESULTS_FILE)
    assert list(metrics["bbox"].values()) == pycocotools_stats(ann, path, img_ids=[1, 5, 7])
    assert metrics["bbox"]["AP50"] > 0
    # the reader's {label: category id} map is accepted
    assert COCOEvaluator(ann, category_ids={1: 1, 2: 3, 3: 18}).category_ids == [1, 3, 18]
    with pytest.raises(EvaluationInputError, match="image_id 99"):
        ev.process([{"image_id": 99}], [dets[1]])


def test_empty_detections_give_zeros(coco_files):
    ann, _ = coco_files
    result = coco_evaluate(ann, [])
    assert result["metrics"] == {name: 0.0 for name in COCO_METRIC_NAMES}
    assert len(result["summary"].splitlines()) == 12
    ev = COCOEvaluator(ann)
    ev.process([{"image_id": 1}], [dict(boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0, int))])
    assert ev.evaluate()["bbox"]["AP"] == 0.0


@pytest.mark.parametrize("entry,message", [
    ({"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "entry 1: unknown image_id 99"),
    ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}, "entry 1: unknown category_id 2"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "entry 1: bbox must be"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, "entry 1 lacks score"),
    ([1, 2], "entry 1 is not an object"),
])
def test_bad_results_entries(coco_files, tmp_path, entry, message):
    ann, _ = coco_files
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([coco_results()[0], entry]))
    with pytest.raises(EvaluationInputError, match=f"bad.json: {message}"):
        coco_evaluate(ann, str(path))


def test_malformed_files(coco_files, tmp_path):
    ann, res = coco_files
    bad = tmp_path / "broken.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(EvaluationInputError, match="broken.json: malformed JSON"):
        coco_evaluate(ann, str(bad))
    with pytest.raises(EvaluationInputError, match="broken.json: malformed JSON"):
        coco_evaluate(str(bad), res)
    with pytest.raises(EvaluationInputError, match="missing.json: annotation file not found"):
        coco_evaluate(str(tmp_path / "missing.json"), res)
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(EvaluationInputError, match="obj.json: expected a JSON list"):
        coco_evaluate(ann, str(tmp_path / "obj.json"))
    with pytest.raises(EvaluationInputError, match="obj.json: not a COCO instances file"):
        coco_evaluate(str(tmp_path / "obj.json"), res)
