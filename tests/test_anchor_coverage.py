"""Anchor coverage (detection/analysis/anchor_coverage.py) against the brute-force IoU with every anchor the model
itself generates (its preprocessor, trunk, generators and RPN border rule), the suggestion's form and gain, and
tools/browse_dataset.py end to end (pictures, statistics, problems, anchors)."""
import json
import os

import numpy as np
import pytest
import torch

from fixtures_data import write_voc_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(**overrides):
    from detection.config import get_default_config, merge_from_dict

    cfg = get_default_config()
    base = {"MODEL": {"BACKBONE": {"NAME": "tiny", "WEIGHTS": ""}, "FREEZE_AT": 0,
                      "ROI_HEADS": {"BOX_HEAD": "mlp", "MLP_DIM": 64}},
            "POOLING_SIZE": 7, "DATA": {"CLASSES": ["a", "b"]}, "ANCHOR_SCALES": [1, 2, 4],
            "TRAIN": {"SCALES": [96, 128], "MAX_SIZE": 200}, "TEST": {"SCALES": [128], "MAX_SIZE": 200}}
    merge_from_dict(cfg, base)
    return merge_from_dict(cfg, overrides, source="test")


FPN = {"MODEL": {"NECK": "fpn", "FPN": {"IN_STRIDES": [4, 8, 16], "ANCHOR_SIZES": [16, 32, 64, 128],
                                        "OUT_CHANNELS": 16}}}
CASES = {"c4": {}, "c4_torchvision": {"ANCHOR_PLACEMENT": "torchvision"},
         "c4_no_border": {"TRAIN": {"RPN_ALLOWED_BORDER": -1}}, "fpn": FPN,
         "fpn_torchvision_div32": {**FPN, "ANCHOR_PLACEMENT": "torchvision", "INPUT": {"SIZE_DIVISIBILITY": 32}}}


def random_records(seed, n=6):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
        g = int(rng.integers(1, 6))
        xy = rng.uniform(0, 1, (g, 2)) * [w, h]
        wh = rng.uniform(3, 70, (g, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        records.append(dict(image_id=str(i), path="", height=h, width=w, boxes=np.minimum(boxes, [w, h, w, h]),
                            labels=rng.integers(1, 3, g), difficult=np.zeros(g, bool), iscrowd=np.zeros(g, bool)))
    return records


def brute_force(cfg, records):
    """Best IoU of every (box, training scale) with the anchors the model makes for that image: the model's own
    preprocessor and trunk give the feature maps, its generators the anchors, its RPN the border mask."""
    from detection.modeling.build import build_model
    from detection.ops import box_iou

    model = build_model(cfg, num_classes=3, load_backbone_weights=False).train()
    out = []
    for rec in records:
        for scale in cfg.TRAIN.SCALES:
            model.preprocess.train_min_sizes = (scale,)
            target = {"boxes": torch.from_numpy(rec["boxes"]), "labels": torch.from_numpy(np.asarray(rec["labels"]))}
            with torch.no_grad():
                batch = model.preprocess([torch.zeros(3, rec["height"], rec["width"])], [target])
                feats = model.backbone(batch.images)
            levels = list(feats.values()) if isinstance(feats, dict) else [feats]
            anchors = torch.cat(model.rpn.anchor_generator(levels, batch.images.shape[-2:]))
            inside = model.rpn._inside_mask(anchors, batch.image_sizes)[0]
            iou = box_iou(batch.gt_boxes[0].double(), anchors[inside].double())
            out.append(iou.max(1).values.numpy() if iou.shape[1] else np.zeros(iou.shape[0]))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_best_anchor_iou_is_the_brute_force_over_the_models_own_anchors(case):
    from detection.analysis.anchor_coverage import best_anchor_iou
    from detection.analysis.boxes import collect_boxes
    from detection.analysis.model_view import build_model_view

    cfg = tiny_cfg(**CASES[case])
    records = random_records(1)
    view = build_model_view(cfg)
    boxes = collect_boxes(records, view, "train")
    fast = best_anchor_iou(boxes, view)
    expected = brute_force(cfg, records)
    # collect_boxes orders rows record by record, scale by scale, as brute_force does
    np.testing.assert_allclose(fast, np.concatenate(expected), atol=2e-5)
    assert fast.min() < 0.4 and fast.max() > 0.6  # boxes the grid serves well and badly


def test_suggestion_keeps_the_generators_form_and_raises_coverage():
    from detection.analysis.anchor_coverage import (AnchorParams, best_anchor_iou, cell_anchors_for,
                                                    current_anchor_params, suggest_anchors)
    from detection.analysis.boxes import collect_boxes
    from detection.analysis.model_view import build_model_view
    from detection.config import merge_from_list

    rng = np.random.default_rng(0)
    records = random_records(2, n=30)
    for rec in records:  # wide objects (h / w ~ 1/4): the default ratios 0.5, 1, 2 miss them
        wh = rng.uniform([36, 9], [56, 14], (len(rec["labels"]), 2))
        xy = rng.uniform(0, 1, (len(wh), 2)) * ([rec["width"], rec["height"]] - wh)
        rec["boxes"] = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    for overrides in ({}, FPN):
        cfg = tiny_cfg(**overrides)
        view = build_model_view(cfg)
        boxes = collect_boxes(records, view, "train")
        current = current_anchor_params(cfg)
        s = suggest_anchors(boxes, view, current, cfg.ANCHOR_PLACEMENT, iterations=150, progress=False)
        assert len(s.suggested.sizes) == len(current.sizes) and len(s.suggested.ratios) == len(current.ratios)
        before, after = best_anchor_iou(boxes, view), best_anchor_iou(
            boxes, view, cell_anchors_for(s.suggested, view.strides, cfg.ANCHOR_PLACEMENT))
        assert (after >= 0.5).mean() > (before >= 0.5).mean() + 0.2
        assert s.fitness_suggested > s.fitness_current
        # the --set values build a model whose anchors are the ones scored
        built = build_model_view(merge_from_list(cfg, s.suggested.overrides()))
        for a, b in zip(built.cell_anchors, cell_anchors_for(s.suggested, view.strides, cfg.ANCHOR_PLACEMENT)):
            np.testing.assert_allclose(a.numpy(), b, atol=1e-4)
    assert AnchorParams("fpn", [8, 16], [0.5, 1]).set_line() == "--set MODEL.FPN.ANCHOR_SIZES '[8, 16]' ANCHOR_RATIOS '[0.5, 1]'"


def test_browse_dataset_draws_counts_reports_problems_and_anchors(tmp_path, capsys):
    import browse_dataset
    import cv2

    images = [("000001", 60, 80, [dict(name="a", bbox=(11, 6, 40, 30)), dict(name="b", bbox=(51, 21, 95, 55))]),
              ("000002", 90, 50, [dict(name="a", bbox=(5, 10, 30, 50), difficult=1), dict(name="b", bbox=(10, 61, 45, 85)),
                                  dict(name="b", bbox=(60, 5, 70, 20))]),  # entirely right of the 50 px wide image
              ("000003", 50, 70, []),
              ("000004", 64, 64, [dict(name="b", bbox=(3, 3, 60, 60))])]
    devkit = write_voc_dataset(str(tmp_path), images=images, splits={"trainval": [i[0] for i in images],
                                                                     "test": ["000001"]})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("MODEL: {BACKBONE: {NAME: tiny, WEIGHTS: ''}, FREEZE_AT: 0, ROI_HEADS: {BOX_HEAD: mlp}}\n"
                   "ANCHOR_SCALES: [1, 2, 4]\nPOOLING_SIZE: 7\n"
                   f"DATA: {{ROOT: '{devkit}', CLASSES: [a, b], TRAIN_SETS: [2007_trainval], TEST_SET: 2007_test}}\n"
                   "TRAIN: {SCALES: [120], MAX_SIZE: 200}\n"
                   f"OUTPUT_DIR: '{tmp_path / 'out'}'\n")
    out = tmp_path / "browse"
    assert browse_dataset.main(["--cfg", str(cfg), "--augment", "--num", "3", "--anchors", "--search-steps", "30",
                                "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "images per split: train 4, test 1" in printed and "suggested: --set ANCHOR_SCALES" in printed
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["boxes_per_class"] == {"a": 2, "b": 3} and stats["difficult_per_class"] == {"a": 1, "b": 0}
    assert [os.path.basename(p) for p in stats["images_without_boxes"]] == ["000003.jpg"]
    assert len(stats["clipped_boxes"]) == 1 and stats["clipped_boxes"][0]["object"] == "b"
    assert len(stats["degenerate_boxes"]) == 1 and stats["degenerate_boxes"][0]["box"] == [59, 4, 70, 20]
    assert sum(stats["area_bands"].values()) == 5 and stats["frame"]["scales"] == [120]
    # the model's input: the short side resized to 120 and padded to 16 (the tiny trunk's stride)
    picture = cv2.imread(str(out / "images" / "00000.jpg"))
    assert picture.shape[:2] == (256, 320)  # 120 x 160 padded to 128 x 160, drawn x2 (at least 192 px high)
    anchors = json.loads((out / "anchors.json").read_text())
    assert anchors["boxes"] == 4 and anchors["suggested"]["set"].startswith("--set ANCHOR_SCALES")
    for name in ("contact_sheet.jpg", "statistics.png", "anchor_coverage.png"):
        assert (out / name).stat().st_size > 1000, name
    assert browse_dataset.main(["--cfg", str(cfg), "--split", "test", "--num", "1", "--output", str(out / "t")]) == 0
    assert browse_dataset.main(["--cfg", str(cfg), "--num", "-1"]) == 2
