"""The Python API (detection.load, Predictor, results): every input kind and bad input, batching, drawing, run
folders, the classifier's results. Seeded untrained 'tiny' models (tests/model_fixtures.py): about a second."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

import detection
from detection.data.image_io import ImageReadError
from detection.image_input import InputError, as_model_input
from model_fixtures import QUICKSTART_CLASSES, build_seeded, tiny_config, write_run_folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("run") / "tiny")
    cfg = tiny_config()
    return write_run_folder(folder, cfg, build_seeded(cfg), QUICKSTART_CLASSES)


@pytest.fixture(scope="module")
def predictor(run_dir):
    return detection.load(run_dir)


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    img = np.full((90, 140, 3), 128, np.uint8)
    img[20:60, 30:80] = (230, 25, 25)
    img[40:85, 90:130] = (25, 25, 230)
    return np.clip(img.astype(np.int16) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


def same(a, b):
    assert len(a) == len(b) and len(a) > 0
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_result_fields_are_numpy_in_the_input_pixels(predictor, picture):
    r = predictor(picture)
    assert r.boxes.dtype == np.float32 and r.boxes.shape == (len(r), 4)
    assert r.scores.dtype == np.float32 and r.labels.dtype == np.int64
    assert np.all(np.diff(r.scores) <= 0) and set(r.labels.tolist()) <= {1, 2, 3}
    assert np.all(r.boxes[:, 0] >= 0) and np.all(r.boxes[:, 2] <= 140) and np.all(r.boxes[:, 3] <= 90)
    assert r.class_names == [QUICKSTART_CLASSES[k - 1] for k in r.labels]
    d = r.to_dict(score_thresh=0.3)
    json.dumps(d)
    assert (d["height"], d["width"]) == (90, 140)
    assert len(d["detections"]) == int((r.scores >= 0.3).sum()) == len(r.above(0.3))
    drawn = r.draw(score_thresh=0.3)
    assert drawn.dtype == np.uint8 and drawn.shape == (90, 140, 3) and not np.array_equal(drawn, picture)
    assert r._repr_png_()[:4] == b"\x89PNG"


def test_every_input_kind_gives_the_same_detections(predictor, picture, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), picture[..., ::-1])
    ref = predictor(picture)
    same(predictor(str(path)), ref)
    same(predictor(path), ref)  # os.PathLike
    same(predictor(Image.fromarray(picture)), ref)
    same(predictor(torch.from_numpy(picture).permute(2, 0, 1).float() / 255), ref)
    same(predictor(torch.from_numpy(picture).permute(2, 0, 1).contiguous()), ref)  # uint8 tensor
    same(predictor(picture.astype(np.float32) / 255), ref)
    same(predictor(picture.astype(np.uint16) * 257), ref)  # 16-bit: 0..65535
    rgba = np.concatenate([picture, np.full(picture.shape[:2] + (1,), 7, np.uint8)], axis=2)
    same(predictor(rgba), ref)  # alpha dropped
    same(predictor(Image.fromarray(rgba)), ref)


def test_grey_inputs_are_replicated_to_rgb(predictor, picture):
    from PIL import Image

    grey = picture[..., 1]
    ref = predictor(np.repeat(grey[..., None], 3, axis=2))
    same(predictor(grey), ref)
    same(predictor(grey[..., None]), ref)
    same(predictor(Image.fromarray(grey)), ref)
    same(predictor(torch.from_numpy(grey)[None].float() / 255), ref)
    _, t = as_model_input(Image.fromarray((grey.astype(np.uint16) * 257)))  # PIL 16-bit grey ('I;16')
    assert torch.allclose(t, torch.from_numpy(grey).float().div(255).expand(3, -1, -1), atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 5, 2), np.uint8), "expected an image array"),
    (np.zeros((3, 40, 50), np.uint8), "channels-first"),
    (np.zeros((0, 40, 3), np.uint8), "empty"),
    (np.zeros((40, 50, 3), np.int64), "unsupported dtype int64"),
    (np.full((40, 50, 3), 255.0, np.float32), "values in 0..1"),
    (np.full((40, 50, 3), np.nan, np.float32), "NaN"),
    (torch.zeros(40, 50, 3), "channels-last"),
    (torch.zeros(2, 3, 40, 50), "expected a tensor [3, H, W]"),
    (torch.full((3, 40, 50), 2.0), "values in 0..1"),
    (42, "unsupported input type int"),
])
def test_bad_inputs_are_one_clear_error(predictor, bad, message):
    with pytest.raises(InputError, match="^input: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        predictor(bad)


def test_missing_and_unreadable_files_name_the_file(predictor, tmp_path, picture):
    with pytest.raises(ImageReadError, match="nothere.jpg"):
        predictor(str(tmp_path / "nothere.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        predictor([picture, str(broken)])
    with pytest.raises(InputError, match="^input 1: unsupported input type"):
        predictor([picture, [1, 2, 3]])


def test_a_list_is_batched_and_equals_one_by_one(predictor, picture):
    images = [picture, picture[:60], np.ascontiguousarray(picture[:, ::-1]), picture[10:], picture[:60, :100]]
    batched = predictor(images, batch_size=4)
    assert isinstance(batched, list) and len(batched) == 5
    for img, r in zip(images, batched):
        assert r.image.shape == img.shape
        same(r, predictor(img))
    with pytest.raises(ValueError, match="batch_size"):
        predictor(images, batch_size=0)


def test_summary_and_repr(predictor):
    text = predictor.summary()
    assert "Layer (type)" in text and "roi_heads.cls_score" in text and repr(text) == str(text)
    assert "tiny" in repr(predictor) and "3 classes" in repr(predictor)


def test_load_from_cfg_and_weights_or_from_the_checkpoint_alone(run_dir, predictor, picture):
    ref = predictor(picture)
    ckpt = os.path.join(run_dir, "model_final.pth")
    same(detection.load(cfg=os.path.join(run_dir, "config.yaml"), weights=ckpt)(picture), ref)
    same(detection.load(weights=ckpt)(picture), ref)
    stricter = detection.load(run_dir, overrides=("TEST.SCORE_THRESH", "0.5"))(picture)
    assert 0 < len(stricter) < len(ref) and stricter.scores.min() > 0.5


TINY_MAPPING = {"MODEL": {"BACKBONE": {"NAME": "tiny", "WEIGHTS": "", "FROZEN_BN": False}, "FREEZE_AT": 0},
                "DATA": {"CLASSES": QUICKSTART_CLASSES}, "ANCHOR_SCALES": [1, 2, 4, 8], "POOLING_SIZE": 7,
                "TEST.SCALES": [128], "TEST.MAX_SIZE": 160, "TEST.RPN_PRE_NMS_TOP_N": 300,
                "TEST.RPN_POST_NMS_TOP_N": 50, "TEST.RPN_MIN_SIZE": 4}  # tiny_config() as a notebook would write it


def test_load_takes_a_mapping_as_cfg(run_dir, predictor, picture):
    """cfg={"MODEL": {...}} is merged over the defaults like a YAML file (it raised a raw AttributeError)."""
    ckpt = os.path.join(run_dir, "model_final.pth")
    same(detection.load(cfg=TINY_MAPPING, weights=ckpt)(picture), predictor(picture))
    with pytest.raises(TypeError, match="cfg= takes a YAML file path, a mapping of config keys"):
        detection.load(cfg=42, weights=ckpt)


def test_load_errors_say_what_is_missing(run_dir, tmp_path):
    empty = tmp_path / "untrained"
    empty.mkdir()
    (empty / "config.yaml").write_text(open(os.path.join(run_dir, "config.yaml")).read())
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        detection.load(str(empty))
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        detection.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        detection.load(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        detection.load(weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="needs a run folder"):
        detection.load()


def test_classifier_results_top_k_probabilities_and_names(tmp_path):
    from detection.config import get_default_config, merge_from_dict

    cfg = get_default_config()
    merge_from_dict(cfg, {"MODEL": {"META_ARCHITECTURE": "classifier", "BACKBONE": {"NAME": "tiny", "WEIGHTS": ""},
                                    "FREEZE_AT": 0, "CLS_HEAD": {"HIDDEN": [16]}},
                          "DATA": {"CLASSES": ["cat", "dog", "fox"]}, "CLS": {"IMAGE_SIZE": 112}, "DEVICE": "cpu"})
    folder = write_run_folder(str(tmp_path / "cls"), cfg, build_seeded(cfg), ["cat", "dog", "fox"])
    model = detection.load(folder)
    img = (np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8)
    r = model(img)
    assert r.probs.shape == (3,) and abs(float(r.probs.sum()) - 1) < 1e-5
    top = r.top_k(2)
    assert len(top) == 2 and top[0] == (r.class_name, pytest.approx(r.score))
    assert r.class_name == ["cat", "dog", "fox"][int(np.argmax(r.probs))] and r.class_names == ["cat", "dog", "fox"]
    assert r.to_dict()["class"] == r.class_name
    drawn = r.draw()
    assert drawn.dtype == np.uint8 and drawn.shape[1] == 256 and drawn.shape[0] > 70 * 256 // 90  # banner on top
    both = model([img, img[:, :45]], batch_size=2)
    np.testing.assert_allclose(both[0].probs, r.probs, atol=1e-6)


def test_the_tta_wrapper_is_built_once_and_results_are_plain_data(run_dir, picture, monkeypatch):
    """TEST.FLIP: the Predictor builds its test-time-augmentation wrapper at load and calls it; its results hold
    only data (output tensors, picture, class names), drawn and serialised by detection/utils/outputs.py."""
    import detection.modeling.tta as tta
    from detection.utils.outputs import draw_output, output_to_json

    built = []
    original = tta.build_tta
    monkeypatch.setattr(tta, "build_tta", lambda cfg, model: built.append(1) or original(cfg, model))
    p = detection.load(run_dir, overrides=("TEST.FLIP", "True"))
    assert isinstance(p.runner, tta.DetectorWithTTA) and len(built) == 1
    r = [p(picture) for _ in range(3)][-1]
    assert len(built) == 1  # not rebuilt per call
    assert set(vars(r)) == {"output", "image", "categories"}
    assert r.to_dict() == {"height": 90, "width": 140, **output_to_json(r.output, QUICKSTART_CLASSES)}
    assert np.array_equal(r.draw(0.3), draw_output(picture, r.output, QUICKSTART_CLASSES, 0.3))
