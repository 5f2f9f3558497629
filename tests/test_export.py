"""ONNX and torch.export: the quick-start detector exported once and run on images of other sizes and aspect
ratios (onnxruntime; a fresh process for the .pt2), empty outputs, RoIPool / legacy RoIAlign, the classifier,
tools/export_model.py. Models are seeded and untrained (tests/model_fixtures.py). About 30 s on 2 cores."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detection.export import (compare_detections, compare_probabilities, export_onnx, export_program, onnx_metadata,
                              onnx_session, run_onnx, save_program)
from model_fixtures import (QUICKSTART_CLASSES, build_seeded, make_confident, quickstart_config, tiny_config,
                            tiny_fpn_config, write_run_folder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("onnxruntime", reason="needs onnxruntime==1.32.0 (requirements.txt)")
pytest.importorskip("onnx", reason="needs onnx==1.23.2 (requirements.txt)")

EXAMPLE = (240, 320)  # the quick start's own image size (TEST.SCALES 240, MAX_SIZE 320)
# portrait, landscape, extreme ratios both ways (the RPN then has fewer anchors than RPN_PRE_NMS_TOP_N), larger
# and smaller than the example
SIZES = [(400, 220), (180, 420), (36, 640), (700, 48), (720, 960), (60, 80)]


def image(h, w, seed=0):
    return torch.rand((3, h, w), generator=torch.Generator().manual_seed(seed + h * 7 + w))


@pytest.fixture(scope="module")
def quickstart():
    return build_seeded(quickstart_config())


@pytest.fixture(scope="module")
def quickstart_onnx(quickstart, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "quickstart.onnx")
    export_onnx(quickstart, path, image(*EXAMPLE), QUICKSTART_CLASSES, {"note": "test"})
    return path, onnx_session(path)


def eager(model, img):
    with torch.no_grad():
        return model([img])[0]


def test_onnx_detector_equals_pytorch_on_other_sizes_and_aspect_ratios(quickstart, quickstart_onnx):
    _, session = quickstart_onnx
    for h, w in [EXAMPLE] + SIZES:
        img = image(h, w)
        ref, got = eager(quickstart, img), run_onnx(session, img)
        c = compare_detections(ref, got)
        assert c.ok and c.count_reference > 0, f"{h}x{w}: {c}"
        assert got["boxes"].dtype == np.float32 and got["scores"].dtype == np.float32
        assert got["labels"].dtype == np.int64 and set(got["labels"].tolist()) <= {1, 2, 3}
        assert got["boxes"][:, 2].max() <= w and got["boxes"][:, 3].max() <= h


def test_onnx_graph_has_only_standard_operators_and_the_class_names(quickstart_onnx):
    import onnx

    path, session = quickstart_onnx
    graph = onnx.load(path).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in graph.node}
    assert {"NonMaxSuppression", "RoiAlign", "Resize", "TopK"} <= ops
    meta = onnx_metadata(path)
    assert meta["class_names"] == QUICKSTART_CLASSES and meta["note"] == "test" and meta["family"] == "detector"
    assert onnx_metadata(session)["class_names"] == QUICKSTART_CLASSES
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    assert session.get_inputs()[0].shape == [3, "height", "width"]


def test_torch_export_program_reproduces_eager_detections_in_a_fresh_process(tmp_path):
    model = build_seeded(tiny_config())  # the same export module as the quick start's, quicker to (de)serialise
    path = save_program(export_program(model, image(128, 160)), str(tmp_path / "tiny.pt2"), QUICKSTART_CLASSES)
    images = [image(h, w) for h, w in SIZES]
    torch.save(images, tmp_path / "images.pt")
    script = ("import sys, torch, detection\n"
              "program = torch.export.load(sys.argv[1]).module()\n"
              "images = torch.load(sys.argv[2], weights_only=True)\n"
              "with torch.no_grad():\n"
              "    torch.save([tuple(program(im)) for im in images], sys.argv[3])\n")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    subprocess.run([sys.executable, "-c", script, path, str(tmp_path / "images.pt"), str(tmp_path / "out.pt")],
                   check=True, env=env, timeout=300)
    outputs = torch.load(tmp_path / "out.pt", weights_only=True)
    for img, (boxes, scores, labels) in zip(images, outputs):
        c = compare_detections(eager(model, img), {"boxes": boxes, "scores": scores, "labels": labels})
        assert c.ok and c.count_reference > 0, str(c)


def _nms_case(n=300, seed=0):
    """Random boxes of 80 classes up to 1333 px, plus class-79 pairs whose IoU is a hair above 0.5: the
    coordinate-offset trick (class * (max + 1) added to the boxes) rounds them and keeps other boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand((2000, 2), generator=g) * 1200
    random = torch.cat([xy, xy + 20 + torch.rand((2000, 2), generator=g) * 300], 1).clamp(max=1333)
    side = 100 + torch.rand(n, generator=g, dtype=torch.float64) * 50
    x1, y1 = (torch.rand(n, generator=g, dtype=torch.float64) * 1000 for _ in range(2))
    dx = side * (1 - (0.5 + 1e-6)) / (1 + 0.5 + 1e-6)
    a = torch.stack([x1, y1, x1 + side, y1 + side], 1)
    b = torch.stack([x1 + dx, y1, x1 + dx + side, y1 + side], 1)
    boxes = torch.cat([random, a.float(), b.float()])
    scores = torch.cat([torch.rand(2000, generator=g), torch.full((n,), 0.9), torch.full((n,), 0.8)])
    labels = torch.cat([torch.randint(0, 80, (2000,), generator=g), torch.full((2 * n,), 79)])
    return boxes, scores, labels


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx: the TorchScript-based exporter
def test_the_graphs_batched_nms_is_detection_ops_batched_nms_at_any_scale(tmp_path):
    """The exported per-class NMS (the class-aware op: one NonMaxSuppression over per-class scores in ONNX) keeps
    exactly batched_nms's boxes in its order, eagerly, in onnxruntime and as a program, where the offset trick
    would not."""
    from detection.export.symbolics import OPSET, register_onnx_symbolics
    from detection.ops import batched_nms, nms

    class Net(torch.nn.Module):
        def forward(self, boxes, scores, labels):
            return batched_nms(boxes, scores, labels, 0.5)

    boxes, scores, labels = _nms_case()
    ref = batched_nms(boxes, scores, labels, 0.5)
    offset = nms(boxes + (labels.to(boxes) * (boxes.max() + 1))[:, None], scores, 0.5)
    assert len(offset) != len(ref)  # the case tells the two apart
    assert torch.equal(Net()(boxes, scores, labels), ref)
    register_onnx_symbolics()
    path = str(tmp_path / "nms.onnx")
    torch.onnx.export(Net(), (boxes[:500], scores[:500], labels[:500]), path, dynamo=False, opset_version=OPSET,
                      input_names=["b", "s", "l"], dynamic_axes={"b": {0: "n"}, "s": {0: "n"}, "l": {0: "n"}})
    out = onnx_session(path).run(None, {"b": boxes.numpy(), "s": scores.numpy(), "l": labels.numpy()})[0]
    np.testing.assert_array_equal(out, ref.numpy())
    program = torch.export.export(Net(), (boxes[:500], scores[:500], labels[:500]), dynamic_shapes=(
        {0: torch.export.Dim("n", min=2)},) * 3).module()
    assert torch.equal(program(boxes, scores, labels), ref)


@pytest.mark.parametrize("overrides", [["POOLING_MODE", "pool"],
                                       ["POOLING_ALIGNED", "False", "MODEL.CLASS_AGNOSTIC_BBOX_REG", "True"]],
                         ids=["roi_pool", "legacy_roi_align_class_agnostic"])
def test_other_pooling_modes_export_to_standard_operators(overrides, tmp_path):
    import onnx

    model = build_seeded(tiny_config(overrides))
    path = export_onnx(model, str(tmp_path / "m.onnx"), image(128, 160), QUICKSTART_CLASSES)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ("MaxRoiPool" if "pool" in overrides else "RoiAlign") in ops
    session = onnx_session(path)
    for h, w in [(128, 160), (300, 90), (50, 70)]:
        img = image(h, w, seed=3)
        c = compare_detections(eager(model, img), run_onnx(session, img))
        assert c.ok and c.count_reference > 0, f"{h}x{w}: {c}"


@pytest.mark.parametrize("overrides", [[], ["MODEL.FPN.NORM", "bn", "MODEL.ROI_HEADS.BOX_HEAD", "convfc",
                                            "MODEL.ROI_HEADS.CONV_DIMS", "[32,32]", "MODEL.RPN.CONV_DEPTH", "2"]],
                         ids=["fpn_v1", "fpn_v2_batchnorm"])
def test_fpn_detectors_export_for_every_size(overrides, tmp_path):
    """Pyramid levels, per-level anchors (torchvision placement) and top-k, level-grouped NMS, MultiScaleRoIAlign,
    placeholder labels never reported; v2's BatchNorm2d neck and conv box head."""
    from detection.engine.tasks import get_task

    cfg = tiny_fpn_config(overrides)
    torch.manual_seed(0)
    model = make_confident(get_task(cfg).build_model(cfg)).eval()
    reported = model.roi_heads.reported_classes
    for got in exported_equal_eager(model, tmp_path / "fpn.onnx", [(128, 160), (300, 90), (40, 500)], seed=7):
        assert bool(reported[got["labels"]].all())  # no 'N/A' label


def exported_equal_eager(model, onnx_path, sizes, seed):
    """Export `model` to ONNX (standard operators only) and torch.export, both traced at 128x160, and check that
    both give the eager detections on random images of `sizes`; yields the program's detections of each."""
    import onnx

    path = export_onnx(model, str(onnx_path), image(128, 160))
    assert {n.domain for n in onnx.load(path).graph.node} <= {"", "ai.onnx"}
    session = onnx_session(path)
    program = export_program(model, image(128, 160)).module()
    for h, w in sizes:
        img = image(h, w, seed=seed)
        ref = eager(model, img)
        c = compare_detections(ref, run_onnx(session, img))
        assert c.ok and c.count_reference > 0, f"{h}x{w}: {c}"
        with torch.no_grad():
            got = dict(zip(("boxes", "scores", "labels"), program(img)))
        assert compare_detections(ref, got).ok, f"{h}x{w} (torch.export)"
        yield got


def test_no_detections_is_empty_outputs_not_an_error(tmp_path):
    model = build_seeded(tiny_config(["TEST.SCORE_THRESH", "1.0"]))  # no softmax score is > 1
    session = onnx_session(export_onnx(model, str(tmp_path / "none.onnx"), image(128, 160)))
    program = export_program(model, image(128, 160)).module()
    for h, w in [(128, 160), (90, 300)]:
        out = run_onnx(session, image(h, w))
        assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)
        assert out["labels"].dtype == np.int64
        boxes, scores, labels = program(image(h, w))
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize("resize", ["squash", "center_crop"])
def test_classifier_exports_logits_and_probabilities_for_any_size(resize, tmp_path):
    from detection.config import get_default_config, merge_from_dict

    cfg = get_default_config()
    merge_from_dict(cfg, {"MODEL": {"META_ARCHITECTURE": "classifier", "BACKBONE": {"NAME": "tiny", "WEIGHTS": ""},
                                    "FREEZE_AT": 0, "CLS_HEAD": {"HIDDEN": [16]}},
                          "DATA": {"CLASSES": ["cat", "dog", "fox"]}, "CLS": {"IMAGE_SIZE": 112, "RESIZE": resize}})
    model = build_seeded(cfg)
    path = export_onnx(model, str(tmp_path / "cls.onnx"), image(150, 130), ["cat", "dog", "fox"])
    session = onnx_session(path)
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    # torch.export for the crop whose sizes come from the input (squash resizes to a constant size)
    program = export_program(model, image(150, 130)).module() if resize == "center_crop" else None
    for h, w in [(112, 112), (300, 200), (50, 60), (40, 600)]:  # down- and upscaling, extreme ratio
        img = image(h, w, seed=5)
        ref = eager(model, img)["probs"]
        out = run_onnx(session, img)
        assert compare_probabilities(ref, out["probabilities"]).ok, f"{h}x{w}"
        assert np.allclose(torch.softmax(torch.from_numpy(out["logits"]), 0).numpy(), out["probabilities"], atol=1e-6)
        if program is not None:
            assert compare_probabilities(ref, program(img)[1]).ok, f"{h}x{w} (torch.export)"


def test_export_tool_checks_the_file_against_pytorch(tmp_path, capsys):
    import cv2

    import export_model

    cfg = tiny_config()
    run = write_run_folder(str(tmp_path / "run"), cfg, build_seeded(cfg), QUICKSTART_CLASSES)
    photos = []
    for i, (h, w) in enumerate([(128, 160), (260, 90)]):
        photos.append(str(tmp_path / f"photo{i}.png"))
        cv2.imwrite(photos[-1], (image(h, w, seed=i).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    for fmt, name in (("onnx", "m.onnx"), ("torch-export", "m.pt2")):
        out = str(tmp_path / name)
        args = ["--cfg", os.path.join(run, "config.yaml"), "--format", fmt, "--output", out, "--check", *photos]
        assert export_model.main(args) == 0
        text = capsys.readouterr().out
        assert os.path.isfile(out) and text.count("-> OK") == 2 and "260x90" in text
    assert export_model.main(["--cfg", os.path.join(run, "config.yaml"), "--format", "onnx", "--output",
                              str(tmp_path / "x.onnx"), "--check", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_a_missing_onnx_package_says_what_to_install(monkeypatch):
    from detection.export.onnx import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ImportError, match=r"pip install onnxruntime==1\.32\.0"):
        require("onnxruntime")


def test_export_tool_refuses_an_output_it_cannot_write(tmp_path, capsys, monkeypatch):
    """--output through a regular file (both formats) and into an unwritable folder exit 2 with one line naming
    the path, before any tracing (they were a FileExistsError / RuntimeError traceback); so does a write that fails
    inside torch.export.save (its RuntimeError names no file)."""
    import export_model
    from detection.export import torch_export

    cfg = tiny_config()
    run = write_run_folder(str(tmp_path / "run"), cfg, build_seeded(cfg), QUICKSTART_CLASSES)
    base = ["--cfg", os.path.join(run, "config.yaml"), "--weights", os.path.join(run, "model_final.pth")]
    afile = tmp_path / "afile"
    afile.write_text("a regular file")

    def refused(fmt, output):
        capsys.readouterr()
        assert export_model.main([*base, "--format", fmt, "--output", str(output)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(output) in err.splitlines()[0], err[-2000:]
        assert err.startswith((f"error: --output {output}", f"error: cannot write {output}: ")), err
        return err

    for fmt, name in (("onnx", "x.onnx"), ("torch-export", "x.pt2")):
        assert f"cannot write to {afile}: it is a file, not a folder" in refused(fmt, afile / name)
        assert not os.path.exists(afile / name)
    assert "is a folder: name the file to write" in refused("torch-export", tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert "Permission denied" in refused("torch-export", locked / "m.pt2")

    def failing_save(*args, **kwargs):  # what torch's writer raises on a failed write
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch_export, "export_program", lambda model, example: object())
    monkeypatch.setattr(torch_export, "save_program", failing_save)
    err = refused("torch-export", tmp_path / "m.pt2")
    assert err.endswith(": [enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")


CASCADE = ["MODEL.ROI_HEADS.NAME", "cascade", "MODEL.CLASS_AGNOSTIC_BBOX_REG", "True"]


@pytest.mark.parametrize("neck", ["c4", "fpn"])
def test_cascade_detectors_export_for_every_size(neck, tmp_path):
    """Cascade R-CNN's three stages (refined RoIs pooled again, scores averaged, the last stage's boxes) traced at
    one size run at others, in onnxruntime and as a torch.export program (C4: the backbone head per stage)."""
    from detection.engine.tasks import get_task

    cfg = tiny_config([*CASCADE, "MODEL.ROI_HEADS.BOX_HEAD", "backbone"]) if neck == "c4" else \
        tiny_fpn_config(CASCADE)
    torch.manual_seed(0)
    model = make_confident(get_task(cfg).build_model(cfg)).eval()
    assert len(list(exported_equal_eager(model, tmp_path / "cascade.onnx", [(128, 160), (300, 90), (40, 500)],
                                         seed=11))) == 3


def test_soft_nms_exports_to_torch_export_and_onnx_refuses_it_naming_the_key(tmp_path, capsys):
    """torch.export keeps the Soft-NMS op (the eager detections at other sizes, decayed scores included); the ONNX
    export is refused with one line naming TEST.NMS_METHOD, by export_onnx and by the tool (exit 2), never
    exported with hard NMS instead."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import export_model

    cfg = tiny_config(["TEST.NMS_METHOD", "gaussian"])
    model = build_seeded(cfg)
    assert model.roi_heads.nms_method == "gaussian"
    program = export_program(model, image(128, 160)).module()
    hard = build_seeded(tiny_config())
    for h, w in [(128, 160), (90, 300)]:
        img = image(h, w, seed=2)
        ref = eager(model, img)
        assert not torch.equal(ref["scores"], eager(hard, img)["scores"][: len(ref["scores"])])  # decayed
        with torch.no_grad():
            got = dict(zip(("boxes", "scores", "labels"), program(img)))
        c = compare_detections(ref, got)
        assert c.ok and c.count_reference > 0, f"{h}x{w}: {c}"
    with pytest.raises(ValueError, match="TEST.NMS_METHOD is 'gaussian'"):
        export_onnx(model, str(tmp_path / "soft.onnx"), image(128, 160))
    run = write_run_folder(str(tmp_path / "run"), cfg, model, QUICKSTART_CLASSES)
    out = tmp_path / "soft.onnx"
    assert export_model.main(["--cfg", os.path.join(run, "config.yaml"), "--format", "onnx", "--output",
                              str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TEST.NMS_METHOD" in err and "torch-export" in err, err
    assert not out.exists()
