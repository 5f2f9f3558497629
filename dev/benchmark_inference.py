#!/usr/bin/env python
"""Per-image CPU latency of one detector four ways: eager, fast=True, the exported program (.pt2) and onnxruntime.

  python dev/benchmark_inference.py [--models quickstart r50_c4 ...] [--threads 1] [--repeats 5]

Models (seeded weights: ImageNet trunks where the weight file is installed, otherwise random with the frozen
BatchNorm statistics calibrated on one image so activations stay in range; random heads): `quickstart`
(configs/quickstart.yaml: MobileNetV2 + MLP head, 240x320 images), `r50_c4` (configs/faster_rcnn_r50_c4_voc0712.yaml
at a CPU-sized test scale: shortest side 480, 100 proposals), and `r50_fpn` when an FPN config exists
(the first configs/faster_rcnn_r50_fpn*.yaml, at the same scale). Each variant runs on the same images in
interleaved rounds after a warm-up; the table gives medians in ms and the ratio to eager, and each variant's largest
box and score differences to eager's detections.
torch and onnxruntime use --threads intra-op threads (1 by default: stable numbers on a shared machine).
"""
from __future__ import annotations

import argparse
import copy
import glob
import os
import sys
import tempfile
import time

import harness
from harness import ROOT

harness.require_detection()
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# name -> (config, overrides, image (height, width))
MODELS = {
    "quickstart": ("configs/quickstart.yaml", [], (240, 320)),
    "r50_c4": ("configs/faster_rcnn_r50_c4_voc0712.yaml",
               ["TEST.SCALES", "[480]", "TEST.MAX_SIZE", "640", "TEST.RPN_POST_NMS_TOP_N", "100"], (480, 640)),
}
_FPN = sorted(glob.glob(os.path.join(ROOT, "configs", "faster_rcnn_r50_fpn*.yaml")))
if _FPN:
    MODELS["r50_fpn"] = (os.path.relpath(_FPN[0], ROOT),
                         ["TEST.SCALES", "[480]", "TEST.MAX_SIZE", "640", "TEST.RPN_POST_NMS_TOP_N", "100"],
                         (480, 640))


def _weights_available(name: str) -> bool:
    from detection.modeling.backbone import WeightsNotFoundError, resolve_weights

    try:
        return resolve_weights(name, "imagenet") is not None
    except WeightsNotFoundError:
        return False


def calibrate_frozen_batchnorm(model, image) -> None:
    """Set every frozen BatchNorm's statistics to the mean / variance of its input on one forward pass (in
    order, so each layer sees already-normalised inputs): a random-init backbone then behaves like a trained one
    numerically (no overflowing or denormal activations distorting the timings)."""
    import torch
    from torchvision.ops.misc import FrozenBatchNorm2d

    def hook(module, args):
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        model([image])
    for h in handles:
        h.remove()


def build(name: str):
    import torch

    from detection.config import load_config
    from detection.engine.tasks import get_task

    cfg_path, overrides, (h, w) = MODELS[name]
    cfg = load_config(os.path.join(ROOT, cfg_path), overrides)
    pretrained = bool(cfg.MODEL.BACKBONE.WEIGHTS) and _weights_available(cfg.MODEL.BACKBONE.NAME)
    if not pretrained:
        cfg.MODEL.BACKBONE.WEIGHTS = ""
    torch.manual_seed(0)
    model = get_task(cfg).build_model(cfg).eval()
    images = [torch.rand((3, h, w), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    if not pretrained:
        calibrate_frozen_batchnorm(model, images[0])
    scale_random_heads(model, images[0])
    return cfg, model, images, "ImageNet trunk" if pretrained else "random, calibrated BN"


def scale_random_heads(model, image, logit_std: float = 2.0, delta_std: float = 0.1) -> None:
    """Redraw the class and box predictors so that, on `image`'s RoI features, class logits have a standard
    deviation of about `logit_std` and box deltas of `delta_std` (a trained model's ranges: spread-out scores,
    boxes near their proposals) whatever the width and scale of the box head's features."""
    import torch

    heads, seen = model.roi_heads, []
    handle = heads.box_head.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        model([image])
    handle.remove()
    rms = float(seen[0].pow(2).mean().sqrt().clamp(min=1e-6))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, std in ((heads.cls_score, logit_std), (heads.bbox_pred, delta_std)):
            d = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * (std / (rms * d ** 0.5)))


def bench(name: str, threads: int, repeats: int, tmp: str) -> dict:
    import torch

    from detection.export import (compare_detections, export_onnx, export_program, load_program,
                                  optimize_for_inference, onnx_session, run_onnx, save_program)

    cfg, model, images, weights = build(name)
    fast = optimize_for_inference(copy.deepcopy(model), torch.device("cpu"))
    t0 = time.perf_counter()
    pt2 = save_program(export_program(model, images[0]), os.path.join(tmp, f"{name}.pt2"))
    program_export_s = time.perf_counter() - t0
    program, _ = load_program(pt2)
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, os.path.join(tmp, f"{name}.onnx"), images[0])
    onnx_export_s = time.perf_counter() - t0
    session = onnx_session(onnx_path, threads=threads)

    def eager(img):
        with torch.no_grad():
            return model([img])[0]

    def fast_run(img):
        with torch.inference_mode():
            return fast([img])[0]

    def program_run(img):
        with torch.no_grad():
            return dict(zip(("boxes", "scores", "labels"), program(img)))

    variants = {"eager": eager, "fast": fast_run, "program": program_run,
                "onnxruntime": lambda img: run_onnx(session, img)}
    refs = [eager(img) for img in images]  # also the warm-up
    diffs = {}
    for key, fn in list(variants.items())[1:]:
        cs = [compare_detections(ref, fn(img)) for ref, img in zip(refs, images)]
        diffs[key] = (all(c.count_reference == c.count_exported and c.labels_equal for c in cs),
                      max(c.max_box_diff for c in cs), max(c.max_score_diff for c in cs))
    times = {key: [] for key in variants}
    for _ in range(repeats):
        for key, fn in variants.items():
            for img in images:
                times[key].append(harness.timed(lambda: fn(img))[0])
    med = {key: harness.median(v) * 1000 for key, v in times.items()}
    detections = len(refs[0]["scores"])
    return dict(name=name, config=MODELS[name][0], size=images[0].shape[1:], weights=weights, med=med, diffs=diffs,
                detections=detections, onnx_export_s=onnx_export_s, program_export_s=program_export_s,
                onnx_mb=os.path.getsize(onnx_path) / 2**20, folded=fast._fast_inference["folded"],
                channels_last=fast._fast_inference["channels_last"])


def table(rows) -> str:
    head = ("| model | image | eager ms | fast=True ms (x eager) | exported program ms (x) | onnxruntime ms (x) | "
            "largest difference to eager: box px / score (fast; program; onnxruntime) |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        m, d = r["med"], r["diffs"]
        cell = lambda k: f"{m[k]:.1f} ({m[k] / m['eager']:.2f}x)"  # noqa: E731
        diff = "; ".join(f"{d[k][1]:.1g} / {d[k][2]:.1g}" + ("" if d[k][0] else " (other detections)")
                         for k in ("fast", "program", "onnxruntime"))
        lines.append(f"| {r['name']} ({r['weights']}) | {r['size'][0]}x{r['size'][1]} | {m['eager']:.1f} | "
                     f"{cell('fast')} | {cell('program')} | {cell('onnxruntime')} | {diff} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmark_inference.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and onnxruntime")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds over the images (after a warm-up)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench(name, args.threads, args.repeats, tmp)
            rows.append(r)
            print(f"{name}: {r['config']}, {r['detections']} detections, {r['folded']} BatchNorms folded, "
                  f"channels_last {r['channels_last']}; ONNX export {r['onnx_export_s']:.1f} s "
                  f"({r['onnx_mb']:.0f} MB), torch.export {r['program_export_s']:.1f} s", flush=True)
    import onnxruntime

    print(f"\ntorch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), "
          f"{args.repeats} rounds x 3 images, medians\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
