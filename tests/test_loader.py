"""DetectionDataset, samplers and the config-built loaders (grouping, sharding, seeding, bad images)."""

import logging
import os
import re

import numpy as np
import pytest
import torch

from detection.config import get_default_config
from detection.data.build import (
    build_detection_dataset,
    build_detection_records,
    build_detection_test_loader,
    build_detection_train_loader,
    collate_detection,
    resolve_coco_set,
)
from detection.data.dataset import DetectionDataset, aspect_ratio_group_ids
from detection.data.image_io import ImageReadError, read_image_rgb
from detection.data.samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler
from detection.data.transforms import make_detection_transform
from detection.data.voc import VOC_CLASSES, load_voc
from fixtures_data import COLOURS, VOC_IMAGES, corrupt_file, truncate_file, write_coco_dataset, write_voc_dataset


@pytest.fixture
def devkit(tmp_path):
    return write_voc_dataset(tmp_path)


def _cfg(devkit, **kw):
    cfg = get_default_config()
    cfg.DATA.ROOT = devkit
    cfg.DATA.NUM_WORKERS = 0
    cfg.TRAIN.SCALES = (40, 56, 72)
    cfg.TRAIN.MAX_SIZE = 120
    cfg.TRAIN.IMS_PER_BATCH = 2
    for k, v in kw.items():
        sec, key = k.split("__")
        cfg[sec][key] = v
    return cfg


def test_dataset_item_contract(devkit):
    recs = load_voc(devkit, "2007_trainval")
    ds = DetectionDataset(recs.records, class_names=recs.class_names)
    img, tgt = ds[0]
    assert img.dtype == torch.float32 and img.shape == (3, 60, 80) and 0 <= img.min() and img.max() <= 1
    # RGB order: the first object (dog, COLOURS[0] = red) at pixel rows 5..29, cols 10..39
    np.testing.assert_allclose(img[:, 15, 20].numpy() * 255, COLOURS[0], atol=12)
    assert tgt["boxes"].dtype == torch.float32 and tgt["labels"].dtype == torch.int64
    # the difficult "person" is left out of the training target by default
    assert tgt["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    np.testing.assert_array_equal(tgt["boxes"].numpy(), [[10, 5, 40, 30]])
    assert tgt["image_id"] == "000001" and tgt["index"] == 0
    assert tgt["orig_size"] == (60, 80) and tgt["size"] == (60, 80) and "scale" not in tgt
    _, empty = ds[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert DetectionDataset(recs.records, use_difficult=True)[0][1]["labels"].shape == (2,)


def test_dataset_with_transform_and_crowd(tmp_path):
    from detection.data.coco import load_coco

    path = write_coco_dataset(tmp_path)
    recs = load_coco(path, os.path.join(tmp_path, "coco", "images"))
    ds = DetectionDataset(recs.records, make_detection_transform(hflip_prob=1.0))
    img, tgt = ds[0]
    assert img.shape == (3, 60, 80) and tgt["orig_size"] == (60, 80)  # no resize in the data pipeline
    assert tgt["labels"].tolist() == [1]  # the crowd box is left out
    np.testing.assert_allclose(tgt["boxes"].numpy(), [[80 - 40, 5, 80 - 10, 30]], atol=1e-3)  # flipped
    assert DetectionDataset(recs.records, use_crowd=True)[0][1]["labels"].tolist() == [1, 3]


@pytest.mark.parametrize("damage", [corrupt_file, truncate_file])
def test_dataset_bad_image_raises_or_is_skipped(devkit, damage, caplog):
    recs = load_voc(devkit, "2007_trainval", check_images=False)
    jpg = recs.records[1]["path"]
    damage(jpg)
    ds = DetectionDataset(recs.records)
    with pytest.raises(ImageReadError, match=re.escape(jpg)):
        ds[1]
    ds = DetectionDataset(recs.records, skip_bad_images=True)
    with caplog.at_level(logging.WARNING):
        _, tgt = ds[1]
    assert tgt["index"] == 2 and any(jpg in r.getMessage() for r in caplog.records)


def test_read_image_size_mismatch_and_missing(devkit, tmp_path):
    path = os.path.join(devkit, "VOC2007", "JPEGImages", "000001.jpg")
    assert read_image_rgb(path).shape == (60, 80, 3)
    with pytest.raises(ImageReadError, match=re.escape(path) + ".*differs from the annotation"):
        read_image_rgb(path, expected_hw=(80, 60))
    with pytest.raises(ImageReadError, match="not found"):
        read_image_rgb(str(tmp_path / "nothing.jpg"))


def _garble_jpeg_body(path, flip_every=50):
    """Flip one bit every `flip_every` bytes of the entropy-coded data (never making or breaking a 0xFF): the
    header and the end marker stay valid, OpenCV still returns an image, libjpeg only warns."""
    data = bytearray(open(path, "rb").read())
    start, end = data.find(b"\xff\xda") + 64, len(data) - 16
    for i in range(start, end, flip_every):
        if data[i] != 0xFF and data[i - 1] != 0xFF and data[i] ^ 0x10 != 0xFF:
            data[i] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_jpeg_with_a_garbled_body_is_a_bad_image(tmp_path, capfd):
    import cv2

    from fixtures_data import draw_image, write_jpeg

    rng = np.random.default_rng(0)
    noisy = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (5, 5), 2)
    path = write_jpeg(str(tmp_path / "garbled.jpg"), noisy, quality=90)
    good = read_image_rgb(path)
    _garble_jpeg_body(path)
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV alone accepts it
    capfd.readouterr()
    with pytest.raises(ImageReadError, match=re.escape(path) + ".*Corrupt JPEG data"):
        read_image_rgb(path)
    assert "Corrupt JPEG data" not in capfd.readouterr().err  # the warning became the error, not stderr noise
    clean = write_jpeg(str(tmp_path / "clean.jpg"), draw_image(40, 50, [[5, 5, 20, 30]]))
    assert read_image_rgb(clean).shape == (40, 50, 3) and good.shape == (96, 128, 3)


def test_exif_orientation_is_applied_and_named_in_size_errors(tmp_path):
    from PIL import Image

    stored = np.zeros((30, 50, 3), np.uint8)  # stored 30 rows x 50 columns, a red mark at the top-left corner
    stored[:5, :8] = (255, 0, 0)
    path = str(tmp_path / "phone.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    upright = read_image_rgb(path)
    assert upright.shape == (50, 30, 3)  # displayed upright: 50 rows x 30 columns
    assert upright[:8, -5:, 0].mean() > 200 and upright[-8:, :5, 0].mean() < 50  # the mark moved to the top-right
    with pytest.raises(ImageReadError, match=re.escape(path) + ".*differs from the annotation's 30x50.*EXIF "
                                                               "orientation tag 6"):
        read_image_rgb(path, expected_hw=(30, 50))


def test_image_read_error_survives_pickling_and_the_dataloader_worker_reraise():
    import pickle

    from torch.utils.data._utils.worker import ExceptionWrapper

    err = ImageReadError("/data/a b.jpg", "truncated JPEG (no end-of-image marker)")
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.path, copy.reason) == (str(err), "/data/a b.jpg", "truncated JPEG (no end-of-image marker)")
    try:
        raise err
    except ImageReadError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ImageReadError) as info:
        wrapped.reraise()  # what torch does in the main process: type(exc)(traceback text)
    assert str(info.value) == "cannot read image /data/a b.jpg: truncated JPEG (no end-of-image marker)"
    assert info.value.path == "/data/a b.jpg"


def test_training_sampler_is_infinite_sharded_and_repeatable():
    take = lambda s, n: [i for _, i in zip(range(n), iter(s))]  # noqa: E731
    a = take(TrainingSampler(10, seed=3), 30)
    assert a == take(TrainingSampler(10, seed=3), 30) and a != take(TrainingSampler(10, seed=4), 30)
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))
    r0 = take(TrainingSampler(10, seed=3, rank=0, world_size=2), 15)
    r1 = take(TrainingSampler(10, seed=3, rank=1, world_size=2), 15)
    assert r0 == a[0::2] and r1 == a[1::2]  # disjoint shards of the same stream
    assert sorted(r0[:5] + r1[:5]) == list(range(10))


def test_inference_sampler_partitions():
    shards = [list(InferenceSampler(10, r, 3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert list(InferenceSampler(2, 2, 3)) == []


def test_grouped_batch_sampler():
    groups = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0])
    bs = GroupedBatchSampler(range(9), groups, 2)
    batches = list(bs)
    assert all(len(set(groups[b])) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(9)) and len(bs) == len(batches) == 5
    assert len(list(GroupedBatchSampler(range(9), groups, 2, drop_last=True))) == 4
    inf = GroupedBatchSampler(TrainingSampler(9, seed=0), groups, 3)
    it = iter(inf)
    for _ in range(20):
        b = next(it)
        assert len(b) == 3 and len(set(groups[b])) == 1
    assert aspect_ratio_group_ids([dict(height=10, width=20), dict(height=20, width=10),
                                   dict(height=5, width=5)]).tolist() == [0, 1, 0]


def test_build_records_filters_empty_for_training_only(devkit):
    cfg = _cfg(devkit)
    train = build_detection_records(cfg, is_train=True)
    # 000003 has no objects, 000004 only a difficult one
    assert [r["image_id"] for r in train.records] == ["000001", "000002", "000005", "000006"]
    assert train.stats.skipped_images == 2
    cfg.DATA.TEST_SET = "2007_trainval"
    assert len(build_detection_records(cfg, is_train=False)) == 6
    cfg.TRAIN.USE_DIFFICULT = True
    assert len(build_detection_records(cfg, is_train=True)) == 5
    cfg.DATA.FILTER_EMPTY = False
    assert len(build_detection_records(cfg, is_train=True)) == 6
    cfg.DATA.CLASSES = []
    with pytest.raises(ValueError, match="DATA.CLASSES"):
        build_detection_records(cfg, is_train=True)


def test_train_loader_groups_and_targets(devkit):
    cfg = _cfg(devkit)
    loader = build_detection_train_loader(cfg)
    it = iter(loader)
    for _ in range(6):
        images, targets = next(it)
        assert len(images) == len(targets) == 2
        orient = {int(t["orig_size"][1] < t["orig_size"][0]) for t in targets}
        assert len(orient) == 1  # landscape and portrait images are never mixed
        for img, t in zip(images, targets):
            assert img.shape[0] == 3 and tuple(img.shape[1:]) == tuple(t["orig_size"])  # the model resizes
            assert t["boxes"].shape[0] == t["labels"].shape[0] > 0
            assert (t["boxes"][:, 2] <= img.shape[2] + 1e-3).all() and (t["boxes"][:, 3] <= img.shape[1] + 1e-3).all()


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same(a, b):
    for (ia, ta), (ib, tb) in zip(a, b):
        if len(ia) != len(ib) or any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(ia, ib)):
            return False
        if any(not torch.equal(x["boxes"], y["boxes"]) or x["image_id"] != y["image_id"] for x, y in zip(ta, tb)):
            return False
    return True


def test_seeded_loaders_repeat_with_workers(devkit):
    cfg = _cfg(devkit, DATA__NUM_WORKERS=2, AUG__COLOR_JITTER=True, AUG__RANDOM_CROP=True, AUG__RANDOM_CROP_MODE="area")
    cfg.RNG_SEED = 11
    ds = build_detection_dataset(cfg, is_train=True)
    a = _batches(build_detection_train_loader(cfg, dataset=ds), 8)
    b = _batches(build_detection_train_loader(cfg), 8)
    assert _same(a, b)
    cfg.RNG_SEED = 12
    c = _batches(build_detection_train_loader(cfg, dataset=ds), 8)
    assert not _same(a, c)
    # workers reseed the augmentation: on one image repeated, worker 0's and worker 1's batches differ
    same_image = DetectionDataset([ds.records[0]] * 8, ds.transform)
    w0, w1 = _batches(build_detection_train_loader(cfg, dataset=same_image), 2)
    assert not _same([w0], [w1])


def test_seeded_loader_repeats_in_main_process(devkit):
    cfg = _cfg(devkit, AUG__COLOR_JITTER=True)
    a = _batches(build_detection_train_loader(cfg), 5)
    b = _batches(build_detection_train_loader(cfg), 5)
    assert _same(a, b)


def test_test_loader_order_sharding_and_no_resize(devkit):
    cfg = _cfg(devkit, DATA__TEST_SET="2007_trainval", TEST__IMS_PER_BATCH=2)
    loader = build_detection_test_loader(cfg)
    seen = []
    for images, targets in loader:
        for img, t in zip(images, targets):
            assert tuple(img.shape[1:]) == t["orig_size"]
            seen.append(t["index"])
    assert seen == list(range(6))
    ds = loader.dataset
    assert ds.class_names == VOC_CLASSES and ds.records[seen[3]]["image_id"] == VOC_IMAGES[3][0]
    parts = [[t["index"] for _, ts in build_detection_test_loader(cfg, ds, rank=r, world_size=4) for t in ts]
             for r in range(4)]
    assert sum(parts, []) == list(range(6))
    # the test targets keep difficult boxes (the evaluator reads the records themselves)
    assert ds[0][1]["labels"].shape == (2,)


def test_coco_through_build(tmp_path):
    path = write_coco_dataset(tmp_path, name="instances_mini.json")
    root = os.path.join(tmp_path, "coco")
    assert resolve_coco_set(root, "instances_mini.json:images") == (path, os.path.join(root, "images"))
    cfg = get_default_config()
    cfg.DATA.FORMAT, cfg.DATA.ROOT, cfg.DATA.CLASSES = "coco", root, []
    cfg.DATA.TRAIN_SETS = ["instances_mini.json:images"]
    cfg.DATA.TEST_SET = path + ":" + os.path.join(root, "images")
    train = build_detection_records(cfg, is_train=True)
    assert [r["coco_id"] for r in train.records] == [5, 9]  # c.jpg has no annotations
    assert train.class_names == ("car", "person", "zebra")
    test = build_detection_records(cfg, is_train=False)
    assert len(test) == 3 and test.meta["contiguous_to_coco_id"] == {1: 3, 2: 7, 3: 12}
    cfg.DATA.CLASSES = list(VOC_CLASSES)
    with pytest.raises(ValueError, match=r"DATA.CLASSES to \[\]"):
        build_detection_records(cfg, is_train=True)


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 2), {"a": 2})]
    images, targets = collate_detection(batch)
    assert [i.shape for i in images] == [(3, 4, 5), (3, 6, 2)] and targets == [{"a": 1}, {"a": 2}]
