"""The synthetic dataset generator: VOC XML and COCO JSON that parse and agree, boxes tight around the drawn
pixels, truncated/difficult flags, byte-identical reruns, atomic writes, the classification layout, the CLI."""

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection.datasets import synthetic
from detection.datasets.synthetic import ClassificationParams, DetectionParams, writing
from detection.evaluation.voc_ap import bbox_overlaps

ROOT = Path(__file__).resolve().parents[1]
PARAMS = DetectionParams(num_train=8, num_val=2, num_test=4, width=160, height=120, seed=3,
                         min_size=12, max_size=64, max_objects=5, p_truncated=0.3, p_difficult=0.15)
CLS_PARAMS = ClassificationParams(num_train=3, num_val=2, width=64, height=64, seed=1)


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def det_root(tmp_path_factory):
    return synthetic.generate_detection_dataset(tmp_path_factory.mktemp("syn") / "det", PARAMS, log=_quiet)


def _read_xml(root: Path, stem: str) -> ET.Element:
    return ET.parse(root / "VOC2007" / "Annotations" / f"{stem}.xml").getroot()


def _xml_objects(ann: ET.Element) -> list:
    out = []
    for obj in ann.findall("object"):
        bb = obj.find("bndbox")
        out.append(dict(name=obj.find("name").text, pose=obj.find("pose").text,
                        truncated=int(obj.find("truncated").text), difficult=int(obj.find("difficult").text),
                        box=[int(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]))
    return out


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_voc_layout_and_xml(det_root):
    voc = det_root / "VOC2007"
    main = voc / "ImageSets" / "Main"
    ids = synthetic.detection_image_ids(PARAMS)
    for split in ("train", "val", "trainval", "test"):
        assert main.joinpath(f"{split}.txt").read_text().split() == [f"{i:06d}" for i in ids[split]]
    assert set(ids["trainval"]).isdisjoint(ids["test"])
    stems = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    assert stems == [f"{i:06d}" for i in range(1, 15)]
    assert sorted(p.stem for p in (voc / "Annotations").glob("*.xml")) == stems
    n_objects = 0
    for stem in stems:
        ann = _read_xml(det_root, stem)
        assert ann.find("folder").text == "VOC2007"
        assert ann.find("filename").text == f"{stem}.jpg"
        size = ann.find("size")
        assert (int(size.find("width").text), int(size.find("height").text), int(size.find("depth").text)) == \
            (160, 120, 3)
        img = cv2.imread(str(voc / "JPEGImages" / f"{stem}.jpg"))
        assert img.shape == (120, 160, 3)
        objs = _xml_objects(ann)
        assert 1 <= len(objs) <= PARAMS.max_objects
        for o in objs:
            assert o["name"] in PARAMS.classes and o["pose"] == "Unspecified"
            assert o["truncated"] in (0, 1) and o["difficult"] in (0, 1)
            x1, y1, x2, y2 = o["box"]
            assert 1 <= x1 <= x2 <= 160 and 1 <= y1 <= y2 <= 120
        n_objects += len(objs)
    manifest = json.loads((det_root / "manifest.json").read_text())
    assert manifest["num_objects"] == n_objects and manifest["num_images"] == 14
    assert manifest["params"] == PARAMS.to_json()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' mask decoding under numpy 2
def test_coco_json_matches_voc(det_root):
    from pycocotools.coco import COCO

    ids = synthetic.detection_image_ids(PARAMS)
    image_root = det_root / synthetic.COCO_IMAGE_ROOT
    for split in ("train", "val", "trainval", "test"):
        coco = COCO(str(det_root / "annotations" / f"instances_{split}.json"))
        cats = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"]) for c in cats] == [(1, "circle"), (3, "square"), (7, "triangle")]
        assert sorted(coco.getImgIds()) == ids[split]
        name_of = {c["id"]: c["name"] for c in cats}
        for img in coco.loadImgs(coco.getImgIds()):
            assert (img["width"], img["height"]) == (160, 120)
            assert (image_root / img["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            voc = _xml_objects(_read_xml(det_root, Path(img["file_name"]).stem))
            assert len(anns) == len(voc)
            for a, o in zip(sorted(anns, key=lambda a: a["id"]), voc):
                xmin, ymin, xmax, ymax = o["box"]
                assert a["bbox"] == [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]
                assert name_of[a["category_id"]] == o["name"]
                assert a["iscrowd"] == 0 and 0 < a["area"] <= a["bbox"][2] * a["bbox"][3]
                assert coco.annToMask(a).sum() > 0  # the polygons are valid


def test_boxes_tight_around_drawn_pixels(det_root):
    """Re-render each image: the objects' pixels (where the composite differs from the background) reach all four
    sides of the box and never leave it, the XML holds that box, and the JPEG on disk is that image."""
    for image_id in range(1, 15):
        s = synthetic.render_detection_image(PARAMS, image_id)
        changed = np.any(s.composite != s.background, axis=-1)
        union = np.zeros_like(changed)
        voc = _xml_objects(_read_xml(det_root, f"{image_id:06d}"))
        assert len(voc) == len(s.objects)
        for o, v in zip(s.objects, voc):
            x1, y1, x2, y2 = (int(c) for c in o.box)
            ys, xs = np.nonzero(o.mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
            drawn = changed & o.mask
            assert drawn[:, x1].any() and drawn[:, x2 - 1].any() and drawn[y1, :].any() and drawn[y2 - 1, :].any()
            assert v["box"] == [x1 + 1, y1 + 1, x2, y2] and v["name"] == o.name
            assert o.area == int(o.mask.sum())
            union |= o.mask
        assert not (changed & ~union).any(), "pixels were painted outside every object's mask"
        jpg = cv2.cvtColor(cv2.imread(str(det_root / "VOC2007" / "JPEGImages" / f"{image_id:06d}.jpg")),
                           cv2.COLOR_BGR2RGB)
        assert np.abs(jpg.astype(np.int16) - s.image.astype(np.int16)).mean() < 8.0  # JPEG q95 of sensor noise


def test_truncated_difficult_and_overlap_rules(det_root):
    truncated = difficult = 0
    for image_id in range(1, 15):
        objs = _xml_objects(_read_xml(det_root, f"{image_id:06d}"))
        for o in objs:
            x1, y1, x2, y2 = o["box"]
            if o["truncated"]:
                truncated += 1
                assert x1 == 1 or y1 == 1 or x2 == 160 or y2 == 120, o
            if o["difficult"]:
                difficult += 1
                assert max(x2 - x1 + 1, y2 - y1 + 1) <= PARAMS.min_size, o
        for i, a in enumerate(objs):  # same-class objects stay separable
            for b in objs[i + 1:]:
                if a["name"] == b["name"]:
                    ba = np.array(a["box"], float) - [1, 1, 0, 0]
                    bb = np.array(b["box"], float) - [1, 1, 0, 0]
                    assert bbox_overlaps(ba, bb, pixel_offset=0.0)[0, 0] < 0.5
    assert truncated >= 1 and difficult >= 1


def test_same_seed_same_bytes_and_exists(det_root, tmp_path):
    logs = []
    again = synthetic.generate_detection_dataset(tmp_path / "again", PARAMS, log=logs.append)
    assert _files(again) == _files(det_root)
    mtime = (again / "manifest.json").stat().st_mtime_ns
    synthetic.generate_detection_dataset(again, PARAMS, log=logs.append)
    assert "exists" in logs[-1] and (again / "manifest.json").stat().st_mtime_ns == mtime
    # another seed: other pixels; other parameters: the dataset is replaced, never mixed
    other = synthetic.render_detection_image(DetectionParams(**{**PARAMS.to_json(), "seed": 4}), 1).image
    assert not np.array_equal(other, synthetic.render_detection_image(PARAMS, 1).image)
    synthetic.generate_detection_dataset(again, PARAMS, log=logs.append, num_test=1)
    assert json.loads((again / "manifest.json").read_text())["num_images"] == 11
    assert len(list((again / "VOC2007" / "JPEGImages").glob("*.jpg"))) == 11
    assert not list(tmp_path.glob("again.*"))  # no temporary or old folders left behind


def test_interrupted_run_leaves_nothing_and_foreign_dirs_are_kept(tmp_path, monkeypatch):
    small = DetectionParams(num_train=3, num_val=0, num_test=1, width=96, height=64, min_size=10, max_size=40)
    out = tmp_path / "ds"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"ds.tmp-{dead.pid}"
    stale.mkdir()  # left by a run that died
    real = synthetic.render_detection_image
    calls = []

    def flaky(params, image_id):
        calls.append(image_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(params, image_id)

    monkeypatch.setattr(writing, "render_detection_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_detection_dataset(out, small, log=_quiet)
    assert not out.exists() and not stale.exists() and not list(tmp_path.glob("ds.tmp-*"))
    monkeypatch.setattr(writing, "render_detection_image", real)

    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="--force"):
        synthetic.generate_detection_dataset(out, small, log=_quiet)
    assert (out / "precious.txt").exists()
    synthetic.generate_detection_dataset(out, small, log=_quiet, force=True)
    assert not (out / "precious.txt").exists() and (out / "manifest.json").exists()

    # a complete-looking dataset with files missing is regenerated
    (out / "VOC2007" / "JPEGImages" / "000002.jpg").unlink()
    logs = []
    synthetic.generate_detection_dataset(out, small, log=logs.append)
    assert (out / "VOC2007" / "JPEGImages" / "000002.jpg").exists() and "exists" not in logs[0]


def test_overlap_parameters_crowd_the_images_and_leave_the_default_data_alone():
    """p_cluster / max_occlusion / max_same_iou (the harder benchmark set) crowd the objects; at their defaults the
    manifest has no such keys and the images are the ones written before the parameters existed (the module's
    dataset is compared byte for byte with a fresh one in test_same_seed_same_bytes_and_exists)."""
    assert not {"max_same_iou", "max_occlusion", "p_cluster"} & set(PARAMS.to_json())
    crowded = DetectionParams(**{**PARAMS.to_json(), "max_objects": 10, "p_cluster": 0.8, "max_same_iou": 0.55,
                                 "max_occlusion": 0.5})
    assert crowded.to_json()["p_cluster"] == 0.8 and DetectionParams(**crowded.to_json()) == crowded

    def overlapping_fraction(params):
        overlapping = total = 0
        for image_id in range(1, 21):
            boxes = np.array([o.box for o in synthetic.render_detection_image(params, image_id).objects], float)
            iou = bbox_overlaps(boxes, boxes, pixel_offset=0.0)
            np.fill_diagonal(iou, 0)
            overlapping, total = overlapping + int((iou.max(1) > 0).sum()), total + len(boxes)
        return overlapping / total

    apart = DetectionParams(**{**crowded.to_json(), "p_cluster": 0.0})
    assert overlapping_fraction(apart) + 0.25 < overlapping_fraction(crowded)
    with pytest.raises(ValueError, match="p_cluster"):
        DetectionParams(p_cluster=1.5)


def test_bad_parameters():
    with pytest.raises(ValueError, match="unknown shape"):
        DetectionParams(classes=("circle", "dog"))
    with pytest.raises(ValueError, match="min_size"):
        DetectionParams(min_size=50, max_size=20)
    with pytest.raises(ValueError, match="at least 2"):
        ClassificationParams(classes=("circle",))


def test_classification_layout(tmp_path):
    out = synthetic.generate_classification_dataset(tmp_path / "cls", CLS_PARAMS, log=_quiet)
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (out / split).iterdir()) == ["circle", "square"]
        for cls in ("circle", "square"):
            files = sorted((out / split / cls).glob("*.jpg"))
            assert [f.name for f in files] == [f"{cls}_{i:05d}.jpg" for i in range(n)]
            assert cv2.imread(str(files[0])).shape == (64, 64, 3)
    again = synthetic.generate_classification_dataset(tmp_path / "cls2", CLS_PARAMS, log=_quiet)
    assert _files(again) == _files(out)
    # class k images are dominated by shapes of class k
    for k in range(2):
        for i in range(3):
            s = synthetic.render_classification_image(CLS_PARAMS, "train", k, i)
            own = sum(o.area for o in s.objects if o.label == k + 1)
            assert own > sum(o.area for o in s.objects if o.label != k + 1)


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset",
                                                  ROOT / "tools" / "make_synthetic_dataset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--num-train", "2", "--num-test", "1", "--size", "96x64", "--seed", "5",
            "--classes", "circle,star", "--min-size", "10", "--max-size", "40", "--preview", str(tmp_path / "p.png")]
    assert tool.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["params"]["classes"] == ["circle", "star"] and m["category_ids"] == {"circle": 1, "star": 3}
    assert (m["params"]["width"], m["params"]["height"]) == (96, 64)
    assert cv2.imread(str(tmp_path / "p.png")) is not None
    assert tool.main(argv[:-2]) == 0 and "exists" in capsys.readouterr().out
    assert tool.main(["--out", str(tmp_path / "bad"), "--classes", "circle,dog"]) == 2
    assert "unknown shape" in capsys.readouterr().err
    assert tool.main(["--mode", "classification", "--out", str(tmp_path / "c"), "--num-train", "1",
                      "--num-val", "1", "--size", "48x48"]) == 0
    assert sorted(os.listdir(tmp_path / "c" / "val")) == ["circle", "square"]
