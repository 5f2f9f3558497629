#!/usr/bin/env python
"""Export a trained model to ONNX or torch.export: one file for every image size, checked against PyTorch.

  python tools/export_model.py --cfg FILE [--weights CKPT] --format onnx|torch-export [--output PATH]
                               [--check IMG [IMG ...]] [--example-size HxW] [--set KEY VALUE ...]

--weights defaults to OUTPUT_DIR's last checkpoint; --output to OUTPUT_DIR/model.onnx or model.pt2. The file takes
`image` float32 [3, H, W] RGB in 0..1 (any H, W) and returns `boxes` [N, 4] xyxy in the image's pixels, `scores`
[N], `labels` [N] in 1..K (detector) or `logits`, `probabilities` [K] (classifier); resize, normalisation, RPN,
NMS and post-processing are inside, at TEST.SCALES[0] without test-time augmentation. The class names are in the
file's metadata. ONNX needs onnx and onnxruntime (requirements.txt); a .pt2 loads with torch.export.load after
`import detection`. --check runs the exported file beside the PyTorch model on each image and prints the largest
differences; when they exceed 0.01 px / 1e-4 the file is deleted and the exit code is 1. Soft-NMS
(TEST.NMS_METHOD linear / gaussian) exports to torch.export only: ONNX has no such operator, and the ONNX export
is refused (exit 2) rather than silently using hard NMS.
Exit codes: 0 done, 1 the check failed, 2 bad arguments / config / input / missing package / an --output that
cannot be written (checked before the export) / Soft-NMS to ONNX.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
logger = logging.getLogger("detection.export_model")

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}


def _parser() -> argparse.ArgumentParser:
    from detection.engine.launch import add_config_arguments

    p = argparse.ArgumentParser(prog="export_model.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--weights", default=None, metavar="CKPT", help="checkpoint (default: OUTPUT_DIR's last one)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="onnx or torch-export (.pt2)")
    p.add_argument("--output", default=None, metavar="PATH", help="file to write (default: OUTPUT_DIR/model.*)")
    p.add_argument("--check", nargs="+", default=[], metavar="IMG",
                   help="images to run the exported file on beside the PyTorch model")
    p.add_argument("--example-size", default=None, metavar="HxW",
                   help="size of the example traced through the model when no --check image is given")
    return p


def _example(cfg, size_text, check_images):
    """The traced example [3, H, W]: the first --check image, else a seeded random image."""
    import torch

    from detection.engine.launch import ToolError

    if check_images:
        return check_images[0][1]
    if size_text:
        try:
            h, w = (int(v) for v in size_text.lower().split("x"))
            assert h > 0 and w > 0
        except (ValueError, AssertionError):
            raise ToolError(f"--example-size {size_text}: expected HxW, e.g. 480x640") from None
    elif cfg.MODEL.META_ARCHITECTURE == "classifier":
        h = w = int(cfg.CLS.IMAGE_SIZE) + 32
    else:
        h = int(cfg.TEST.SCALES[0])
        w = h * 4 // 3
    return torch.rand((3, h, w), generator=torch.Generator().manual_seed(0))


def _read_checks(paths):
    from detection.image_input import as_model_input

    return [(p, as_model_input(p, p)[1]) for p in paths]


def _single_view_note(cfg) -> str:
    if cfg.MODEL.META_ARCHITECTURE == "faster_rcnn" and (len(cfg.TEST.SCALES) > 1 or cfg.TEST.FLIP):
        return (f"the config tests with augmentation (TEST.SCALES {list(cfg.TEST.SCALES)}, FLIP {cfg.TEST.FLIP}); "
                f"the export is one view at TEST.SCALES[0] = {cfg.TEST.SCALES[0]} without flip")
    if cfg.MODEL.META_ARCHITECTURE == "classifier" and cfg.TEST.get("TEN_CROP"):
        return "the config tests with TEN_CROP; the export is one view (the model's resize)"
    return ""


def export(args) -> int:
    import torch

    from detection import __version__
    from detection.config import dump_config
    from detection.engine.launch import ToolError, find_inference_weights, load_config_from_args, \
        load_inference_model, setup_run
    from detection.engine.tasks import get_task
    from detection.export.compare import compare_detections, compare_probabilities

    cfg = load_config_from_args(args)
    if args.format == "onnx" and cfg.MODEL.META_ARCHITECTURE == "faster_rcnn" and cfg.TEST.NMS_METHOD != "hard":
        from detection.export.onnx import soft_nms_refusal

        raise ToolError(soft_nms_refusal(cfg.TEST.NMS_METHOD))  # before loading anything
    if args.device and args.device != "cpu":
        logger.warning("--device %s ignored: exports are traced on the CPU", args.device)
    cfg.DEVICE = "cpu"
    task = get_task(cfg)
    weights = find_inference_weights(cfg, args.weights, task)
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "model" + FORMATS[args.format])
    _check_output(output, FORMATS[args.format])  # before minutes of tracing
    checks = _read_checks(args.check)
    device = setup_run(cfg, None)
    model, names = load_inference_model(task, cfg, weights, device)
    note = _single_view_note(cfg)
    if note:
        logger.warning(note)
    example = _example(cfg, args.example_size, checks)
    meta = {"weights": os.path.abspath(weights) if weights else "", "detection_version": __version__,
            "torch_version": torch.__version__, "config": dump_config(cfg)}
    start = time.perf_counter()
    try:
        if args.format == "onnx":
            from detection.export.onnx import export_onnx, onnx_session, run_onnx

            export_onnx(model, output, example, names, meta)
            session = onnx_session(output) if checks else None
            run = (lambda img: run_onnx(session, img)) if checks else None
        else:
            from detection.export.torch_export import export_program, load_program, save_program

            exported = export_program(model, example)
            try:
                save_program(exported, output, names, meta)
            except (RuntimeError, OSError) as exc:  # torch's writer says "PytorchStreamWriter failed ..."
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ToolError(f"cannot write {output}: {reason}") from exc
            program = load_program(output)[0] if checks else None
            run = (lambda img: dict(zip(_output_names(model), (t.numpy() for t in program(img))))) if checks \
                else None
    except ImportError as exc:
        raise ToolError(str(exc)) from exc
    size_mb = os.path.getsize(output) / 2**20
    print(f"exported {args.format} to {os.path.abspath(output)} ({size_mb:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s)")
    failed = []
    for path, image in checks:
        with torch.no_grad():
            ref = model([image])[0]
        with torch.no_grad():
            got = run(image)
        if "boxes" in ref:
            c = compare_detections(ref, got)
        else:
            c = compare_probabilities(ref["probs"], got["probabilities"])
        print(f"check {path} ({image.shape[1]}x{image.shape[2]}): {c}")
        if not c.ok:
            failed.append(path)
    if failed:
        os.remove(output)
        print(f"error: the exported model differs from the PyTorch model on {', '.join(failed)}; "
              f"{output} was deleted", file=sys.stderr)
        return 1
    return 0


def _check_output(output: str, suffix: str) -> None:
    """ToolError naming --output when it is a folder or its folder cannot be created or written (a path through
    a regular file, no permission, a read-only file system)."""
    from detection.engine.launch import ToolError, check_writable_dir

    if os.path.isdir(output):
        raise ToolError(f"--output {output} is a folder: name the file to write, e.g. "
                        f"{os.path.join(output, 'model' + suffix)}")
    try:
        check_writable_dir(os.path.dirname(os.path.abspath(output)))
    except ToolError as exc:
        raise ToolError(f"--output {output}: {exc}") from None


def _output_names(model):
    from detection.export.traceable import OUTPUT_NAMES, export_module

    return OUTPUT_NAMES[type(export_module(model))]


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.engine.launch import run_tool

    return run_tool(export, args)


if __name__ == "__main__":
    sys.exit(main())
