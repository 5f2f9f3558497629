"""YOLO-format datasets (detection/data/yolo.py) and tools/convert_dataset.py: the same images and boxes written
as VOC, COCO and YOLO read back as identical training records and identical seeded training batches; YOLO
validation errors name the file and line."""
import os
import re

import numpy as np
import pytest
import torch

from fixtures_data import draw_image, write_jpeg, write_voc_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import convert_dataset

CLASSES = ["cat", "dog", "car"]
# (index, height, width, objects with 1-based inclusive VOC boxes); one image without objects, non-dyadic sizes
IMAGES = [
    ("000001", 60, 80, [dict(name="dog", bbox=(11, 6, 40, 30)), dict(name="car", bbox=(51, 21, 80, 55))]),
    ("000002", 90, 50, [dict(name="cat", bbox=(5, 10, 30, 50)), dict(name="car", bbox=(10, 61, 45, 85))]),
    ("000003", 50, 70, []),
    ("000004", 77, 93, [dict(name="cat", bbox=(1, 1, 93, 77)), dict(name="dog", bbox=(33, 7, 41, 19))]),
    ("000005", 48, 72, [dict(name="car", bbox=(41, 21, 72, 48)), dict(name="dog", bbox=(1, 1, 20, 15))]),
]


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory):
    """{format: dataset root} of the same dataset: the VOC original and its COCO and YOLO conversions."""
    tmp = tmp_path_factory.mktemp("formats")
    devkit = write_voc_dataset(str(tmp), images=IMAGES, splits={"trainval": [i[0] for i in IMAGES],
                                                                 "test": ["000001", "000004"]})
    voc = os.path.join(devkit, "VOC2007")
    roots = {"voc": voc, "coco": str(tmp / "coco"), "yolo": str(tmp / "yolo")}
    for fmt in ("coco", "yolo"):
        assert convert_dataset.main(["--from", "voc", "--root", voc, "--sets", "trainval", "test", "--classes",
                                     ",".join(CLASSES), "--to", fmt, "--out", roots[fmt]]) == 0
    # and back: YOLO -> VOC gives the original boxes too
    roots["voc_from_yolo"] = str(tmp / "voc2")
    assert convert_dataset.main(["--from", "yolo", "--root", roots["yolo"], "--sets", "trainval", "test", "--to", "voc",
                                 "--out", roots["voc_from_yolo"], "--link"]) == 0
    return roots


def _cfg(fmt, root, train="trainval", test="test"):
    from detection.config import get_default_config, merge_from_dict

    sets = {"voc": (train, test), "voc_from_yolo": (train, test), "yolo": (train, test),
            "coco": (f"annotations/instances_{train}.json:{train}", f"annotations/instances_{test}.json:{test}")}[fmt]
    return merge_from_dict(get_default_config(), {
        "DATA": {"FORMAT": "voc" if fmt.startswith("voc") else fmt, "ROOT": root, "TRAIN_SETS": [sets[0]],
                 "TEST_SET": sets[1], "CLASSES": CLASSES, "NUM_WORKERS": 0},
        "TRAIN": {"IMS_PER_BATCH": 2}, "RNG_SEED": 5})


def _comparable(records):
    return [(os.path.basename(r["path"]), r["height"], r["width"], r["boxes"].tobytes(), r["labels"].tolist(),
             r["difficult"].tolist(), r["iscrowd"].tolist()) for r in records]


@pytest.mark.parametrize("is_train", [True, False])
def test_the_same_dataset_in_three_formats_gives_identical_records(three_formats, is_train):
    from detection.data.build import build_detection_records

    got = {fmt: build_detection_records(_cfg(fmt, root), is_train) for fmt, root in three_formats.items()}
    reference = _comparable(got["voc"].records)
    assert len(reference) == (4 if is_train else 2)  # training drops the image without boxes
    for fmt, recs in got.items():
        assert _comparable(recs.records) == reference, fmt
        assert tuple(recs.class_names) == tuple(CLASSES)


def test_and_so_identical_seeded_training_batches(three_formats):
    from detection.data.build import build_detection_train_loader

    batches = {}
    for fmt, root in three_formats.items():
        cfg = _cfg(fmt, root)
        cfg.AUG.RANDOM_CROP = True  # the random crop and flip must draw the same, too
        it = iter(build_detection_train_loader(cfg))
        batches[fmt] = [next(it) for _ in range(3)]
    for fmt, got in batches.items():
        for (images, targets), (ref_images, ref_targets) in zip(got, batches["voc"]):
            assert all(torch.equal(a, b) for a, b in zip(images, ref_images)), fmt
            for t, r in zip(targets, ref_targets):
                assert torch.equal(t["boxes"], r["boxes"]) and torch.equal(t["labels"], r["labels"]), fmt


def _yolo_dataset(root, labels, names=("a", "b"), extra_yaml=""):
    """A YOLO dataset with one 40x50 image per entry of `labels` ({stem: label text or None = no file})."""
    os.makedirs(os.path.join(root, "images", "train"), exist_ok=True)
    for stem, text in labels.items():
        write_jpeg(os.path.join(root, "images", "train", f"{stem}.jpg"), draw_image(40, 50, []))
        if text is not None:
            os.makedirs(os.path.join(root, "labels", "train"), exist_ok=True)
            with open(os.path.join(root, "labels", "train", f"{stem}.txt"), "w") as f:
                f.write(text)
    with open(os.path.join(root, "data.yaml"), "w") as f:
        names = dict(names) if isinstance(names, dict) else list(names)
        f.write(f"path: .\ntrain: images/train\nval: images/train\nnames: {names}\n{extra_yaml}")
    return str(root)


@pytest.mark.parametrize("text, message", [
    ("0 0.5 0.5 0.2\n", "x.txt line 1: expected 'class cx cy w h'"),
    ("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 zero 0.2\n", "x.txt line 3: 'zero' is not a number"),
    ("2 0.5 0.5 0.2 0.2\n", "x.txt line 1: class id 2 is not one of 0..1"),
    ("0.5 0.5 0.5 0.2 0.2\n", "x.txt line 1: class id 0.5 is not one of 0..1"),
    ("1 0.5 1.25 0.2 0.2\n", "x.txt line 1: cy = 1.25 is outside [0, 1]"),
    ("1 0.5 0.5 -0.2 0.2\n", "x.txt line 1: w = -0.2 is outside [0, 1]"),
])
def test_yolo_label_errors_name_the_file_and_line(tmp_path, text, message):
    from detection.data.records import AnnotationError
    from detection.data.yolo import load_yolo

    root = _yolo_dataset(tmp_path, {"x": text})
    with pytest.raises(AnnotationError, match=re.escape("labels/train/" + message)):
        load_yolo(root, ["train"])


def test_yolo_dataset_errors(tmp_path):
    from detection.data.records import AnnotationError
    from detection.data.yolo import load_yolo

    root = _yolo_dataset(tmp_path / "twice", {"x": "0 0.5 0.5 0.2 0.2\n"})
    with open(os.path.join(root, "list.txt"), "w") as f:
        f.write("images/train/x.jpg\n./images/train/x.jpg\n")
    with open(os.path.join(root, "data.yaml"), "a") as f:
        f.write("listed: list.txt\n")
    with pytest.raises(AnnotationError, match=r"images/train/x\.jpg is listed twice"):
        load_yolo(root, ["listed"])
    with pytest.raises(AnnotationError, match=r"no split 'test' \(its splits: train, val, listed\)"):
        load_yolo(root, ["test"])
    with pytest.raises(FileNotFoundError, match="no data.yaml"):
        load_yolo(str(tmp_path), ["train"])
    with pytest.raises(AnnotationError, match=r"do not match the class list"):
        load_yolo(root, ["train"], class_names=["a", "c"])


def test_yolo_unlabeled_images_polygons_and_names_mapping(tmp_path):
    from detection.config import get_default_config, merge_from_dict
    from detection.data.build import build_detection_records
    from detection.data.yolo import load_yolo

    root = _yolo_dataset(tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n", "b": None, "c": "",
                                    "d": "0 0.1 0.1 0.3 0.1 0.3 0.5\n"}, names={0: "x", 1: "y"})
    recs = load_yolo(root, ["train"])
    assert [r["image_id"] for r in recs] == ["images/train/a", "images/train/b", "images/train/c", "images/train/d"]
    assert recs.class_names == ("x", "y") and recs.stats.empty_images == 2
    np.testing.assert_array_equal(recs[0]["boxes"], [[20, 12, 30, 28]])  # 50 x 40 image
    np.testing.assert_allclose(recs[3]["boxes"], [[5, 4, 15, 20]], atol=1e-5)  # the polygon's box
    assert recs[0]["labels"].tolist() == [2] and recs[3]["labels"].tolist() == [1]
    assert len(load_yolo(root, ["train"], unlabeled="drop")) == 2
    # DATA.CLASSES in another order relabels; DATA.YOLO_UNLABELED drops at read time
    cfg = merge_from_dict(get_default_config(), {"DATA": {"FORMAT": "yolo", "ROOT": os.path.join(root, "data.yaml"),
                                                          "TEST_SET": "val", "CLASSES": ["y", "x"],
                                                          "YOLO_UNLABELED": "drop"}})
    test = build_detection_records(cfg, is_train=False)
    assert len(test) == 2 and test[0]["labels"].tolist() == [1] and test[1]["labels"].tolist() == [2]


def test_the_detection_task_scores_yolo_data_with_coco_ap(three_formats):
    from detection.data.build import build_detection_dataset
    from detection.engine.tasks import get_task

    cfg = _cfg("yolo", three_formats["yolo"])
    cfg.DATA.CLASSES = []
    task = get_task(cfg)
    assert task.resolve_class_names(cfg) == CLASSES
    dataset = build_detection_dataset(cfg, is_train=False)
    evaluator = task.build_evaluator(cfg, dataset, None)
    evaluator.reset()
    outputs = [dict(boxes=torch.from_numpy(r["boxes"]), labels=torch.from_numpy(r["labels"]),
                    scores=torch.ones(len(r["labels"]))) for r in dataset.records]
    evaluator.process(dataset.records, outputs)
    assert evaluator.evaluate()["mAP"] == pytest.approx(1.0)
