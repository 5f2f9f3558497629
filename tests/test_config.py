"""detection.config: strict keys, types, --set, _BASE_, dump/reload, generated docs in sync."""

import json
import os
import subprocess
import sys

import pytest

from detection import config as C
from detection.config import ConfigError, dump_config, get_default_config, load_config, merge_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_defaults_are_a_deep_copy():
    a, b = get_default_config(), get_default_config()
    a.DATA.CLASSES.append("zebra")
    a.TRAIN.SCALES = (1,)
    assert "zebra" not in b.DATA.CLASSES and b.TRAIN.SCALES == (600,)
    assert "zebra" not in C.DEFAULTS.DATA.CLASSES
    assert b.TRAIN.BBOX_NORMALIZE_STDS == (0.1, 0.1, 0.2, 0.2)
    assert b.MODEL.BACKBONE.NAME == "vgg16" and len(b.DATA.CLASSES) == 20


def test_every_key_has_a_comment():
    specs = C.config_keys()
    assert len(specs) > 60
    for s in specs:
        assert s.comment.strip(), s.key
        assert "\n" not in s.comment, s.key


def test_unknown_key_in_file_names_key_file_and_suggestion(tmp_path):
    p = _write(tmp_path / "bad.yaml", "TRAIN:\n  SCALE: [800]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "TRAIN.SCALE" in msg and p in msg and "TRAIN.SCALES" in msg


def test_unknown_key_suggests_same_leaf_in_other_section():
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR"):
        load_config(overrides=["TRAIN.BASE_LR", "0.1"])
    with pytest.raises(ConfigError, match="TRAIN.SCALES"):
        load_config(overrides=["TRIAN.SCALES", "(800,)"])
    with pytest.raises(ConfigError, match="unknown config key NOPE"):
        load_config(overrides=["NOPE", "1"])
    # a section cannot be replaced by a scalar, a leaf cannot hold a mapping
    with pytest.raises(ConfigError, match="MODEL"):
        merge_from_dict(get_default_config(), {"MODEL": 3})
    with pytest.raises(ConfigError, match="TRAIN.SCALES.*expected list of int"):
        merge_from_dict(get_default_config(), {"TRAIN": {"SCALES": {"X": 1}}})


def test_wrong_type_names_key_file_expected_and_value(tmp_path):
    p = _write(tmp_path / "t.yaml", "SOLVER:\n  MAX_ITER: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "SOLVER.MAX_ITER" in msg and p in msg and "int" in msg and "'fast'" in msg


@pytest.mark.parametrize(
    "key,value",
    [
        ("TRAIN.USE_FLIPPED", 1),  # int is not a bool
        ("TRAIN.MAX_SIZE", 1000.5),  # float is not an int
        ("TRAIN.MAX_SIZE", True),  # bool is not an int
        ("TRAIN.SCALES", 600),  # scalar is not a list
        ("TRAIN.SCALES", [600.5]),  # element type
        ("DATA.ROOT", None),  # None only where the default is None
        ("POOLING_MODE", "roi"),  # choices
        ("DEVICE", "gpu"),  # pattern
        ("SOLVER.BASE_LR", "abc"),
    ],
)
def test_wrong_types_rejected(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        merge_from_dict(get_default_config(), {key: value})


def test_accepted_conversions(tmp_path):
    cfg = merge_from_dict(get_default_config(), {"SOLVER.BASE_LR": 1, "TRAIN.SCALES": [480, 600],
                                                  "ANCHOR_RATIOS": [1, 2], "DEVICE": "cuda:1"})
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.TRAIN.SCALES == (480, 600) and isinstance(cfg.TRAIN.SCALES, tuple)
    assert cfg.ANCHOR_RATIOS == (1.0, 2.0) and all(isinstance(r, float) for r in cfg.ANCHOR_RATIOS)
    # YAML 1.1 reads 1e-3 as a string: accepted for float keys
    p = _write(tmp_path / "lr.yaml", "SOLVER:\n  BASE_LR: 1e-3\n  STEPS: [10, 20]\nDATA:\n  CLASSES: [cat, dog]\n")
    cfg = load_config(p)
    assert cfg.SOLVER.BASE_LR == 0.001 and cfg.SOLVER.STEPS == (10, 20) and cfg.DATA.CLASSES == ["cat", "dog"]


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("SOLVER.MAX_ITER", -5, ">= 1"),  # used to "train" and save model_final at iteration -5
        ("SOLVER.MAX_ITER", 0, ">= 1"),
        ("TRAIN.IMS_PER_BATCH", 0, ">= 1"),
        ("TEST.IMS_PER_BATCH", 0, ">= 1"),
        ("DATA.NUM_WORKERS", -1, ">= 0"),
        ("TEST.SCALES", [], "a non-empty list, each >= 1"),
        ("TRAIN.SCALES", [600, 0], "each >= 1"),
        ("TEST.MAX_SIZE", -1, ">= 0"),
        ("TRAIN.FG_FRACTION", 1.5, "in [0, 1]"),
        ("TEST.NMS", -0.1, "in [0, 1]"),
        ("TEST.SCORE_THRESH", 2, "in [0, 1]"),
        ("SOLVER.BASE_LR", -0.01, ">= 0"),
        ("PIXEL_STDS", [0.2, 0.2], "a list of exactly 3 entries"),
        ("PIXEL_STDS", [0.2, 0.0, 0.2], "each > 0"),
        ("AUG.RANDOM_CROP_SCALE", [0.0, 1.0], "in (0, 1]"),
        ("MODEL.CLS_HEAD.TRAINABLE_STAGES", -2, ">= -1"),
    ],
)
def test_values_outside_the_range_name_key_source_and_range(tmp_path, key, value, allowed):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[key, repr(value)])
    msg = str(e.value)
    assert key in msg and "--set" in msg and allowed in msg and repr(value).replace("'", "") in msg.replace("'", "")
    p = _write(tmp_path / "r.yaml", f"{key}: {json.dumps(value)}\n")  # dotted keys work in files too
    with pytest.raises(ConfigError, match=p):
        load_config(p)


@pytest.mark.parametrize("key,text", [("SOLVER.BASE_LR", ".inf"), ("SOLVER.BASE_LR", "-.inf"),
                                      ("SOLVER.CLIP_GRAD_NORM", ".inf"), ("SOLVER.GAMMA", ".nan"),
                                      ("ANCHOR_RATIOS", "[0.5, .inf]"), ("MODEL.RPN.SMOOTH_L1_BETA", ".inf")])
def test_numbers_must_be_finite(tmp_path, key, text):
    """`SOLVER.BASE_LR: .inf` passed (it has only a lower bound) and failed at iteration 2; every number of every
    key must now be finite (a key's spec could allow infinity with finite=False; none does)."""
    p = _write(tmp_path / "inf.yaml", f"{key}: {text}\n")
    with pytest.raises(ConfigError, match=f"config key {key} in {p}: expected (a finite number|finite numbers), "
                                          f"got .*(inf|nan)"):
        load_config(p)
    with pytest.raises(ConfigError, match="finite"):
        load_config(overrides=[key, text.replace(".inf", "1e999").replace(".nan", "nan")])
    assert all(spec.finite for spec in C.config_keys())


def test_an_unquoted_list_of_names_on_the_command_line_says_how_to_quote():
    """`--set DATA.CLASSES '[circle, square]'` is not a Python literal: the error shows the quoted form."""
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["DATA.CLASSES", "[circle, square]"])
    assert str(e.value).endswith("""--set DATA.CLASSES '["circle", "square"]'""")
    assert load_config(overrides=["DATA.CLASSES", '["circle", "square"]']).DATA.CLASSES == ["circle", "square"]
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["TRAIN.SCALES", "[600, big]"])
    assert "quoted" not in str(e.value)  # a list of numbers has no names to quote


def test_a_mapping_loads_like_a_yaml_file(tmp_path):
    """load_config takes a mapping as it takes a YAML file: nested sections or dotted keys over the defaults,
    strictly; a loaded config is such a mapping (detection.load(cfg={...}))."""
    cfg = load_config({"MODEL": {"BACKBONE": {"NAME": "resnet50"}}, "SOLVER.BASE_LR": 0.02}, ["TEST.NMS", "0.4"])
    assert cfg.MODEL.BACKBONE.NAME == "resnet50" and cfg.SOLVER.BASE_LR == 0.02 and cfg.TEST.NMS == 0.4
    assert cfg.MODEL.FREEZE_AT == get_default_config().MODEL.FREEZE_AT
    assert load_config(cfg) == cfg
    base = _write(tmp_path / "base.yaml", "SOLVER: {MAX_ITER: 7}\n")
    assert load_config({"_BASE_": base}).SOLVER.MAX_ITER == 7
    with pytest.raises(ConfigError, match="unknown config key MODEL.BACKBONE.NAMES in the cfg mapping"):
        load_config({"MODEL": {"BACKBONE": {"NAMES": "resnet50"}}})


def test_values_at_the_range_ends_are_accepted():
    cfg = load_config(overrides=["SOLVER.MAX_ITER", "1", "DATA.NUM_WORKERS", "0", "TRAIN.FG_FRACTION", "1",
                                 "TEST.NMS", "0", "TRAIN.RPN_ALLOWED_BORDER", "-1", "MODEL.CLS_HEAD.HIDDEN", "[]",
                                 "SOLVER.STEPS", "()"])
    assert cfg.SOLVER.MAX_ITER == 1 and cfg.TRAIN.FG_FRACTION == 1.0 and cfg.SOLVER.STEPS == ()


def test_relations_between_keys():
    with pytest.raises(ConfigError, match="TRAIN.BG_THRESH_HI = 0.6 and TRAIN.FG_THRESH = 0.5 in --set"):
        load_config(overrides=["TRAIN.BG_THRESH_HI", "0.6"])
    with pytest.raises(ConfigError, match="TRAIN.RPN_NEGATIVE_OVERLAP .* must be <= TRAIN.RPN_POSITIVE_OVERLAP"):
        load_config(overrides=["TRAIN.RPN_NEGATIVE_OVERLAP", "0.8"])
    with pytest.raises(ConfigError, match="AUG.RANDOM_CROP_SCALE"):
        load_config(overrides=["AUG.RANDOM_CROP_SCALE", "(0.9, 0.5)"])


def test_voc_07_metric_takes_auto_true_false_and_bools(tmp_path):
    assert load_config().TEST.VOC_07_METRIC == "auto" and load_config().TEST.VOC_RULES == "py-faster-rcnn"
    p = _write(tmp_path / "m.yaml", "TEST:\n  VOC_07_METRIC: true\n  VOC_RULES: devkit\n")
    cfg = load_config(p)
    assert cfg.TEST.VOC_07_METRIC == "true" and cfg.TEST.VOC_RULES == "devkit"
    assert load_config(overrides=["TEST.VOC_07_METRIC", "False"]).TEST.VOC_07_METRIC == "false"
    assert load_config(overrides=["TEST.VOC_07_METRIC", "auto"]).TEST.VOC_07_METRIC == "auto"
    with pytest.raises(ConfigError, match="TEST.VOC_07_METRIC.*'auto', 'true', 'false'"):
        load_config(overrides=["TEST.VOC_07_METRIC", "yes"])
    with pytest.raises(ConfigError, match="TEST.VOC_RULES.*'py-faster-rcnn', 'devkit'"):
        load_config(overrides=["TEST.VOC_RULES", "matlab"])


def test_set_overrides():
    cfg = load_config(overrides=["TRAIN.SCALES", "(480, 576)", "SOLVER.BASE_LR", "0.01", "TEST.FLIP", "True",
                                 "DATA.TEST_SET", "2007", "OUTPUT_DIR", "outputs/x y", "DATA.TRAIN_SETS",
                                 "['2007_trainval', '2012_trainval']", "MODEL.CLS_HEAD.HIDDEN", "[]"])
    assert cfg.TRAIN.SCALES == (480, 576)
    assert cfg.SOLVER.BASE_LR == 0.01 and cfg.TEST.FLIP is True
    assert cfg.DATA.TEST_SET == "2007"  # literal_eval gives an int; a str key keeps the raw string
    assert cfg.OUTPUT_DIR == "outputs/x y"
    assert cfg.DATA.TRAIN_SETS == ["2007_trainval", "2012_trainval"]
    assert cfg.MODEL.CLS_HEAD.HIDDEN == []
    with pytest.raises(ConfigError, match="pairs"):
        load_config(overrides=["TRAIN.SCALES"])
    with pytest.raises(ConfigError, match="--set"):
        load_config(overrides=["TRAIN.MAX_SIZE", "big"])


def test_base_inheritance(tmp_path):
    _write(tmp_path / "base" / "root.yaml", "SOLVER:\n  BASE_LR: 0.02\n  MAX_ITER: 100\nTRAIN:\n  SCALES: [500]\n")
    _write(tmp_path / "base" / "mid.yaml", "_BASE_: root.yaml\nSOLVER:\n  MAX_ITER: 200\n")
    _write(tmp_path / "extra.yaml", "DATA:\n  NUM_WORKERS: 0\n")
    top = _write(tmp_path / "exp" / "top.yaml",
                 "_BASE_: [../base/mid.yaml, ../extra.yaml]\nSOLVER:\n  GAMMA: 0.5\n")
    cfg = load_config(top, overrides=["SOLVER.BASE_LR", "0.03"])
    assert cfg.SOLVER.MAX_ITER == 200  # mid overrides root
    assert cfg.TRAIN.SCALES == (500,)  # from root, two levels up
    assert cfg.DATA.NUM_WORKERS == 0 and cfg.SOLVER.GAMMA == 0.5
    assert cfg.SOLVER.BASE_LR == 0.03  # --set wins over every file
    assert "_BASE_" not in cfg


def test_base_errors(tmp_path):
    a = _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(a)
    m = _write(tmp_path / "m.yaml", "_BASE_: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(m)
    # an unknown key inside a base file names the base file
    _write(tmp_path / "badbase.yaml", "TRAIN:\n  FG_THRES: 0.4\n")
    c = _write(tmp_path / "child.yaml", "_BASE_: badbase.yaml\n")
    with pytest.raises(ConfigError, match="badbase.yaml.*TRAIN.FG_THRESH"):
        load_config(c)
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    e = _write(tmp_path / "empty.yaml", "")
    assert load_config(e) == get_default_config()


def test_dump_and_reload_identical(tmp_path):
    cfg = load_config(overrides=["TRAIN.SCALES", "(480, 600)", "SOLVER.BASE_LR", "1e-05", "DATA.CLASSES",
                                 "['yes', 'no', 'null', '1']", "OUTPUT_DIR", "", "MODEL.RPN.SMOOTH_L1_BETA",
                                 str(1 / 7)])
    text = dump_config(cfg)
    p = _write(tmp_path / "dump.yaml", text)
    again = load_config(p)
    assert again == cfg
    assert dump_config(again) == text
    assert type(again.TRAIN.SCALES) is tuple and again.DATA.CLASSES == ["yes", "no", "null", "1"]
    assert load_config(_write(tmp_path / "d.yaml", dump_config(get_default_config()))) == get_default_config()


def test_resolve_num_classes():
    cfg = get_default_config()
    assert C.resolve_num_classes(cfg) == 21
    cfg.MODEL.META_ARCHITECTURE = "classifier"
    cfg.DATA.CLASSES = ["cat", "dog"]
    assert C.resolve_num_classes(cfg) == 2
    cfg.MODEL.NUM_CLASSES = 5
    assert C.resolve_num_classes(cfg) == 5


def test_docs_in_sync():
    import gen_config_docs
    path = os.path.join(ROOT, "docs", "config.md")
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    assert current == gen_config_docs.render(), "docs/config.md is out of date: run `python tools/gen_config_docs.py`"
    for spec in C.config_keys():
        assert f"`{spec.key}`" in current


def test_gen_config_docs_check_mode():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_config_docs.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yaml")))
def test_every_shipped_config_loads_and_validates(name):
    """Every file in configs/ merges over the defaults (with its _BASE_ chain) and passes the value checks."""
    cfg = load_config(os.path.join(ROOT, "configs", name))
    assert cfg.OUTPUT_DIR
