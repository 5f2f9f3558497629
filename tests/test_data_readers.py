"""VOC and COCO readers: coordinate conversion, class maps, joins, and every bad-input case."""

import json
import logging
import os
import re
import time

import numpy as np
import pytest

from detection.data.coco import load_coco
from detection.data.records import AnnotationError, check_image_header, check_records
from detection.data.voc import VOC_CLASSES, from_voc_pixels, load_voc, resolve_voc_set, to_voc_pixels
from fixtures_data import (
    VOC_IMAGES,
    coco_fixture_content,
    corrupt_file,
    truncate_file,
    voc_to_continuous,
    write_coco_dataset,
    write_split,
    write_voc_dataset,
    write_voc_image,
    write_voc_xml,
)


@pytest.fixture
def devkit(tmp_path):
    return write_voc_dataset(tmp_path)


def _voc_dir(devkit, year="2007"):
    return os.path.join(devkit, f"VOC{year}")


# ----------------------------------------------------------------------------------------------------------------
# VOC
# ----------------------------------------------------------------------------------------------------------------
def test_voc_reads_records_and_converts_coordinates(devkit, caplog):
    with caplog.at_level(logging.INFO, logger="detection.data"):
        out = load_voc(devkit, ["2007_trainval"])
    check_records(out.records)
    assert out.class_names == VOC_CLASSES
    assert [r["image_id"] for r in out.records] == [i for i, *_ in VOC_IMAGES]
    for rec, (index, h, w, objs) in zip(out.records, VOC_IMAGES):
        assert (rec["height"], rec["width"]) == (h, w)
        assert rec["path"].endswith(os.path.join("VOC2007", "JPEGImages", f"{index}.jpg"))
        expected = np.array([voc_to_continuous(o["bbox"]) for o in objs], np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(rec["boxes"], expected)  # x1 = xmin - 1, x2 = xmax: width = xmax - xmin + 1
        assert rec["labels"].tolist() == [VOC_CLASSES.index(o["name"]) + 1 for o in objs]
        assert rec["difficult"].tolist() == [bool(o.get("difficult", 0)) for o in objs]
        assert not rec["iscrowd"].any()
    empty = out.records[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    n_obj = sum(len(o) for *_, o in VOC_IMAGES)
    assert out.stats.images == 6 and out.stats.objects == n_obj and out.stats.difficult == 2
    assert out.stats.clipped == 0 and out.stats.dropped == 0 and out.stats.empty_images == 1
    summary = [r.getMessage() for r in caplog.records if "images" in r.getMessage() and "objects" in r.getMessage()]
    assert summary and f"6 images, {n_obj} objects" in summary[-1] and "0 boxes clipped" in summary[-1]


def test_voc_pixel_conversion_round_trip():
    voc = np.array([[1, 1, 10, 20], [5.5, 3, 7, 9]], np.float32)
    cont = from_voc_pixels(voc)
    np.testing.assert_array_equal(cont, [[0, 0, 10, 20], [4.5, 2, 7, 9]])
    assert cont[0, 2] - cont[0, 0] == 10  # a 1..10 inclusive box is 10 pixels wide
    np.testing.assert_array_equal(to_voc_pixels(cont), voc)


def test_voc_joins_years_and_accepts_a_voc_folder(tmp_path):
    devkit = write_voc_dataset(tmp_path, "2007")
    write_voc_dataset(tmp_path, "2012", images=VOC_IMAGES[:3], prefix="2008_")
    out = load_voc(devkit, ["2007_trainval", "2012_trainval"])
    assert len(out) == 9 and out.records[6]["image_id"] == "2008_000001"
    assert out.stats.images == 9
    direct = load_voc(os.path.join(devkit, "VOC2007"), "test")
    assert [r["image_id"] for r in direct] == ["000001", "000002"]
    assert resolve_voc_set(devkit, "2012_trainval") == (os.path.join(devkit, "VOC2012"), "trainval")


def test_voc_custom_dataset_with_its_own_classes(tmp_path):
    voc_dir = str(tmp_path / "shapes")
    write_voc_image(voc_dir, "img0", 40, 40, [dict(name="square", bbox=(1, 1, 10, 10)),
                                               dict(name="Circle", bbox=(20, 20, 30, 30))])
    write_split(voc_dir, "train", ["img0"])
    out = load_voc(voc_dir, ["train"], class_names=("circle", "square"))
    assert out.records[0]["labels"].tolist() == [2, 1]  # order of the class list; names match case-insensitively
    out2 = load_voc(str(tmp_path), ["shapes_train"], class_names=("circle", "square"))  # DIR_SPLIT under a root
    assert out2.records[0]["labels"].tolist() == [2, 1]


def test_voc_box_outside_image_is_clipped_and_counted(tmp_path):
    devkit = write_voc_dataset(tmp_path, images=[("000001", 50, 60, [dict(name="dog", bbox=(-4, 10, 75, 30)),
                                                                      dict(name="cat", bbox=(5, 5, 20, 20))])])
    out = load_voc(devkit, "2007_trainval")
    np.testing.assert_array_equal(out.records[0]["boxes"][0], [0, 9, 60, 30])
    assert out.stats.clipped == 1 and out.stats.dropped == 0


def test_voc_degenerate_box_dropped_with_warning_naming_file(tmp_path, caplog):
    devkit = write_voc_dataset(tmp_path, images=[("000001", 50, 60, [dict(name="dog", bbox=(30, 10, 20, 30)),
                                                                      dict(name="cat", bbox=(5, 5, 20, 20)),
                                                                      dict(name="car", bbox=(70, 5, 90, 20))])])
    with caplog.at_level(logging.WARNING):
        out = load_voc(devkit, "2007_trainval")
    rec = out.records[0]
    assert rec["labels"].tolist() == [VOC_CLASSES.index("cat") + 1]  # x2 < x1, and a box fully right of the image
    assert out.stats.dropped == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    xml = os.path.join(devkit, "VOC2007", "Annotations", "000001.xml")
    assert len(warnings) == 2 and all(xml in w and "degenerate" in w for w in warnings)
    assert "dog" in warnings[0] and "car" in warnings[1]


def test_voc_unknown_class_names_file_and_class(devkit):
    xml = write_voc_xml(os.path.join(_voc_dir(devkit), "Annotations", "000002.xml"), "000002.jpg", 50, 90,
                        [dict(name="unicorn", bbox=(1, 1, 5, 5))])
    with pytest.raises(AnnotationError, match=re.escape(xml) + ".*unknown class 'unicorn'"):
        load_voc(devkit, "2007_trainval")


def test_voc_malformed_xml_names_file_and_position(devkit):
    xml = os.path.join(_voc_dir(devkit), "Annotations", "000006.xml")
    with open(xml, "w") as f:
        f.write("<annotation>\n  <size><width>10</width>\n  <height>5</height></size>\n  <object><name>dog</nam>\n")
    with pytest.raises(AnnotationError, match=re.escape(xml) + r": malformed XML at line 4, column \d+"):
        load_voc(devkit, "2007_trainval")


@pytest.mark.parametrize("case,field", [("nosize", "<size>"), ("nobndbox", "<bndbox>"), ("noxmin", "<xmin>"),
                                        ("noname", "<name>"), ("badnum", "<ymax>")])
def test_voc_missing_fields_name_file_and_field(devkit, case, field):
    xml = os.path.join(_voc_dir(devkit), "Annotations", "000001.xml")
    obj = dict(name="dog", bbox=(1, 1, 10, 10))
    if case == "nosize":
        write_voc_xml(xml, "000001.jpg", None, None, [obj])
    elif case == "nobndbox":
        write_voc_xml(xml, "000001.jpg", 80, 60, [dict(name="dog", bbox=None)])
    else:
        write_voc_xml(xml, "000001.jpg", 80, 60, [obj])
        with open(xml) as f:
            text = f.read()
        text = {"noxmin": lambda t: re.sub(r"<xmin>.*</xmin>", "", t),
                "noname": lambda t: t.replace("<name>dog</name>", ""),
                "badnum": lambda t: t.replace("<ymax>10</ymax>", "<ymax>ten</ymax>")}[case](text)
        with open(xml, "w") as f:
            f.write(text)
    with pytest.raises(AnnotationError, match=re.escape(xml) + ".*" + re.escape(field)):
        load_voc(devkit, "2007_trainval")


def test_voc_missing_split_file_and_folder(devkit):
    with pytest.raises(FileNotFoundError, match=re.escape(os.path.join("ImageSets", "Main", "val.txt"))):
        load_voc(devkit, "2007_val")
    with pytest.raises(FileNotFoundError, match="VOC2010"):
        load_voc(devkit, "2010_trainval")


def test_voc_missing_annotation_file(devkit):
    os.remove(os.path.join(_voc_dir(devkit), "Annotations", "000003.xml"))
    with pytest.raises(AnnotationError, match=r"000003\.xml.*not found"):
        load_voc(devkit, "2007_trainval")


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete"])
def test_voc_bad_image_header_error_or_skip(devkit, damage, caplog):
    jpg = os.path.join(_voc_dir(devkit), "JPEGImages", "000002.jpg")
    {"corrupt": corrupt_file, "truncate": truncate_file, "delete": os.remove}[damage](jpg)
    with pytest.raises(AnnotationError, match=re.escape(jpg)):
        load_voc(devkit, "2007_trainval")
    with caplog.at_level(logging.WARNING):
        out = load_voc(devkit, "2007_trainval", skip_bad_images=True)
    assert len(out) == 5 and out.stats.skipped_images == 1
    assert any(jpg in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(load_voc(devkit, "2007_trainval", check_images=False)) == 6  # the header check can be turned off


def test_check_image_header(tmp_path, devkit):
    good = os.path.join(_voc_dir(devkit), "JPEGImages", "000001.jpg")
    assert check_image_header(good) is None
    bad = str(tmp_path / "x.jpg")
    open(bad, "wb").close()
    assert "empty" in check_image_header(bad)
    assert "not found" in check_image_header(str(tmp_path / "missing.jpg"))


def test_voc_no_stale_cache(devkit):
    first = load_voc(devkit, "2007_trainval")
    assert first.records[0]["labels"].shape == (2,)
    xml = os.path.join(_voc_dir(devkit), "Annotations", "000001.xml")
    time.sleep(0.01)
    write_voc_xml(xml, "000001.jpg", 80, 60, [dict(name="cow", bbox=(2, 2, 9, 9))])
    again = load_voc(devkit, "2007_trainval")
    assert again.records[0]["labels"].tolist() == [VOC_CLASSES.index("cow") + 1]


# ----------------------------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------------------------
def test_coco_maps_categories_converts_boxes_and_flags_crowd(tmp_path):
    path = write_coco_dataset(tmp_path)
    out = load_coco(path, os.path.join(tmp_path, "coco", "images"))
    check_records(out.records)
    assert out.class_names == ("car", "person", "zebra")  # sorted by category id 3, 7, 12
    assert out.meta["coco_id_to_contiguous"] == {3: 1, 7: 2, 12: 3}
    assert out.meta["contiguous_to_coco_id"] == {1: 3, 2: 7, 3: 12}
    recs = {r["coco_id"]: r for r in out.records}
    assert [r["image_id"] for r in out.records] == [5, 9, 11]
    np.testing.assert_array_equal(recs[5]["boxes"], [[10, 5, 40, 30], [50, 20, 70, 55]])  # xywh -> xyxy
    assert recs[5]["labels"].tolist() == [1, 3] and recs[5]["iscrowd"].tolist() == [False, True]
    assert recs[9]["labels"].tolist() == [2, 3] and not recs[9]["difficult"].any()
    assert recs[11]["boxes"].shape == (0, 4)  # images without annotations are kept by default
    assert out.stats.crowd == 1 and out.stats.objects == 4 and out.stats.empty_images == 1
    assert len(load_coco(path, os.path.join(tmp_path, "coco", "images"), keep_empty=False)) == 2


def test_coco_class_list_order_and_mismatch(tmp_path):
    path = write_coco_dataset(tmp_path)
    images = os.path.join(tmp_path, "coco", "images")
    out = load_coco(path, images, class_names=("zebra", "person", "car"))
    assert out.meta["coco_id_to_contiguous"] == {12: 1, 7: 2, 3: 3}
    assert out.meta["contiguous_to_coco_id"] == {1: 12, 2: 7, 3: 3}
    assert out.records[0]["labels"].tolist() == [3, 1]
    with pytest.raises(AnnotationError, match=re.escape(path) + ".*do not match"):
        load_coco(path, images, class_names=VOC_CLASSES)


def test_coco_box_clipping_and_degenerate(tmp_path, caplog):
    _, anns = coco_fixture_content()
    anns = anns + [dict(id=8, image_id=11, category_id=3, bbox=[60.0, 40.0, 10.0, 10.0], iscrowd=0),  # clipped
                   dict(id=9, image_id=11, category_id=3, bbox=[10.0, 10.0, 0.0, 5.0], iscrowd=0)]  # w = 0
    path = write_coco_dataset(tmp_path, annotations=anns)
    with caplog.at_level(logging.WARNING):
        out = load_coco(path, os.path.join(tmp_path, "coco", "images"))
    rec = [r for r in out.records if r["coco_id"] == 11][0]
    np.testing.assert_array_equal(rec["boxes"], [[60, 40, 64, 48]])
    assert out.stats.clipped == 1 and out.stats.dropped == 1
    assert any(path in r.getMessage() and "annotation id 9" in r.getMessage() for r in caplog.records)


def test_coco_malformed_json_names_file_line_column(tmp_path):
    path = str(tmp_path / "bad.json")
    with open(path, "w") as f:
        f.write('{\n  "images": [],\n  "categories": [,]\n}\n')
    with pytest.raises(AnnotationError, match=re.escape(path) + r": malformed JSON at line 3, column 18"):
        load_coco(path, str(tmp_path))


@pytest.mark.parametrize("case,pattern", [
    ("no_categories", r"missing field 'categories'"),
    ("image_no_width", r"missing field 'width' in images\[1\] \(id 9\)"),
    ("ann_no_bbox", r"missing field 'bbox' in annotations\[0\] \(id 1\)"),
    ("unknown_category", r"unknown category id 99"),
    ("unknown_image", r"unknown image id 1234"),
])
def test_coco_missing_fields_and_bad_ids(tmp_path, case, pattern):
    path = write_coco_dataset(tmp_path)
    with open(path) as f:
        data = json.load(f)
    if case == "no_categories":
        del data["categories"]
    elif case == "image_no_width":
        del data["images"][1]["width"]
    elif case == "ann_no_bbox":
        del data["annotations"][0]["bbox"]
    elif case == "unknown_category":
        data["annotations"][0]["category_id"] = 99
    elif case == "unknown_image":
        data["annotations"][0]["image_id"] = 1234
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(AnnotationError, match=re.escape(path) + ".*" + pattern):
        load_coco(path, os.path.join(tmp_path, "coco", "images"))


def test_coco_bad_image_error_or_skip(tmp_path):
    path = write_coco_dataset(tmp_path)
    images = os.path.join(tmp_path, "coco", "images")
    corrupt_file(os.path.join(images, "b.jpg"))
    with pytest.raises(AnnotationError, match=re.escape(os.path.join(images, "b.jpg"))):
        load_coco(path, images)
    out = load_coco(path, images, skip_bad_images=True)
    assert [r["coco_id"] for r in out.records] == [5, 11] and out.stats.skipped_images == 1


def test_coco_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco(str(tmp_path / "nope.json"))


# ----------------------------------------------------------------------------------------------------------------
# Duplicates: an image or annotation listed twice is refused, never merged
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case,reader_message,evaluator_message", [
    # images[1] takes images[0]'s id: pycocotools kept one image and gave it both images' boxes
    ("image_id", "duplicate image id 5: images[0] (a.jpg) and images[1] (b.jpg)",
     "duplicate image id 5: a.jpg and b.jpg"),
    ("annotation_id", "duplicate annotation id 1: on image a.jpg and on image b.jpg",
     "duplicate annotation id 1: on image a.jpg and on image b.jpg"),
])
def test_coco_duplicate_ids_name_the_id_and_both_files(tmp_path, case, reader_message, evaluator_message):
    from detection.evaluation.coco import load_coco_gt
    from detection.evaluation.evaluator import EvaluationInputError

    images, anns = coco_fixture_content()
    if case == "image_id":
        images[1]["id"] = images[0]["id"]
    else:
        anns[2]["id"] = anns[0]["id"]  # anns[2] is on b.jpg, anns[0] on a.jpg
    path = write_coco_dataset(tmp_path, images, anns)
    with pytest.raises(AnnotationError, match=re.escape(f"{path}: {reader_message}")):
        load_coco(path, os.path.join(tmp_path, "coco", "images"))
    with pytest.raises(EvaluationInputError, match=re.escape(f"{path}: {evaluator_message}")):
        load_coco_gt(path)  # reval.py coco and the COCO evaluator read the file themselves


def test_voc_image_listed_twice_is_an_error(devkit):
    voc = _voc_dir(devkit)
    ids = [index for index, *_ in VOC_IMAGES]
    split = write_split(voc, "dup", [ids[0], ids[1], ids[0]])
    listed_twice = re.escape(split) + f": image {ids[0]} is listed twice \\(lines 1 and 3\\)"
    with pytest.raises(AnnotationError, match=listed_twice):
        load_voc(devkit, "2007_dup")
    write_split(voc, "first", ids[:2])
    write_split(voc, "second", ids[1:])
    with pytest.raises(AnnotationError, match=f"image {ids[1]} of .* is in two of the joined sets, 2007_first and "
                                              f"2007_second"):
        load_voc(devkit, ["2007_first", "2007_second"])
    with pytest.raises(AnnotationError, match="in two of the joined sets, 2007_first and 2007_first"):
        load_voc(devkit, ["2007_first", "2007_first"])
    from detection.evaluation.evaluator import EvaluationInputError
    from detection.evaluation.voc_io import read_voc_split

    with pytest.raises(EvaluationInputError, match=re.escape(split) + f": image {ids[0]} is listed twice"):
        read_voc_split(voc, "dup")  # the evaluator's own reader (reval.py): it would count the objects twice
