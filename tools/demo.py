#!/usr/bin/env python
"""Run a model on your images: draws the detections (or the top labels) and writes them as JSON.

  python tools/demo.py --cfg FILE [--weights CKPT] --input PATH [PATH ...] [--output DIR] [--score-thresh T]
  python tools/demo.py --cfg FILE --input clip.mp4 [--batch-size 8]     # or a camera index: --input 0 --max-frames 300

PATH: an image, a folder (its images, sorted), a glob ('photos/*.jpg', quote it), a video file (.mp4, .avi, .mov,
.mkv, ...) or a camera index. A video is written annotated as <output>/<name>.mp4 (its frames batched through the
model, --batch-size at a time, with a progress bar) with <name>.jsonl: one line of detections per frame. --weights defaults to
OUTPUT_DIR's last checkpoint (a model complete from pretrained weights, e.g. configs/imagenet_mobilenet_v2.yaml,
needs none). Writes <output>/<image name>.jpg with boxes, class names and scores drawn, and
<output>/detections.json. Works on CPU; --fast folds BatchNorm into the convolutions (detection/export/fast.py).
The images go through detection.api.Predictor (what `detection.load` returns). An unreadable image is reported and
skipped (exit code 1 at the end).
Exit codes: 0 done, 1 some images could not be read, 2 bad arguments / config / no images found.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
logger = logging.getLogger("detection.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _parser() -> argparse.ArgumentParser:
    from detection.engine.launch import add_config_arguments

    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--weights", default=None, metavar="CKPT", help="checkpoint (default: OUTPUT_DIR's last one)")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="images, folders or globs")
    p.add_argument("--output", default=None, metavar="DIR", help="where to write (default: OUTPUT_DIR/demo)")
    p.add_argument("--score-thresh", type=float, default=0.5, metavar="T",
                   help="draw and report detections scoring at least T (default 0.5)")
    p.add_argument("--fast", action="store_true", help="fold BatchNorm, channels_last, inference_mode")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="video frames per forward pass (default 4)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="stop a video or camera after N frames (a camera runs until then, or Ctrl-C)")
    return p


def expand_inputs(inputs) -> list:
    """Image files named by `inputs` (files, folders, globs), in order, without duplicates."""
    from detection.engine.launch import ToolError

    from detection.video_io import VIDEO_EXTENSIONS, parse_camera

    files = []
    for item in inputs:
        if parse_camera(item) is not None:
            found = [item]
        elif os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ToolError(f"--input {item}: the folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(f for f in glob.glob(item) if f.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
            if not found:
                raise ToolError(f"--input {item}: no such file or folder, and no image matches it as a glob")
        files.extend(f for f in found if f not in files)
    return files


def _output_name(path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, k = f"{stem}.jpg", 1
    while name in used:
        name, k = f"{stem}_{k}.jpg", k + 1
    used.add(name)
    return name


def demo(args) -> int:
    from tqdm import tqdm

    from detection.api import Predictor
    from detection.data.image_io import ImageReadError
    from detection.utils.atomic_io import write_json
    from detection.engine.launch import ToolError, find_inference_weights, load_config_from_args, setup_run
    from detection.engine.tasks import get_task
    from detection.evaluation.evaluator import json_safe
    from detection.utils.visualize import save_image

    if not 0.0 <= args.score_thresh <= 1.0:
        raise ToolError(f"--score-thresh {args.score_thresh}: expected a value in [0, 1]")
    if args.batch_size < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise ToolError(f"--batch-size {args.batch_size} / --max-frames {args.max_frames}: expected values >= 1")
    cfg = load_config_from_args(args)
    files = expand_inputs(args.input)
    task = get_task(cfg)
    weights = find_inference_weights(cfg, args.weights, task)
    output_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "demo")
    device = setup_run(cfg, None)
    os.makedirs(output_dir, exist_ok=True)
    predictor = Predictor.from_config(cfg, weights, device, fast=args.fast)
    names = predictor.class_names
    results, failed, used = [], [], set()
    from detection.video_io import is_video_path, parse_camera

    videos = [f for f in files if parse_camera(f) is not None or is_video_path(f)]
    files = [f for f in files if f not in videos]
    for source in videos:
        results.append(_run_video(predictor, source, output_dir, args, used))
    for path in tqdm(files, desc="demo", unit="image", disable=len(files) < 3 or not sys.stderr.isatty()):
        try:
            result = predictor(path)
        except ImageReadError as exc:
            logger.error("%s (skipped)", exc)
            failed.append(path)
            continue
        out_path = os.path.join(output_dir, _output_name(path, used))
        save_image(out_path, result.draw(args.score_thresh))
        entry = {"file": os.path.abspath(path), "output": os.path.abspath(out_path),
                 **result.to_dict(args.score_thresh)}
        results.append(entry)
        tqdm.write(f"{path}: {_describe(entry)} -> {out_path}")
    write_json(os.path.join(output_dir, "detections.json"),
               json_safe({"config": os.path.abspath(args.cfg), "weights": weights, "score_thresh": args.score_thresh,
                          "class_names": list(names), "images": results, "unreadable": failed}))
    print(f"{len(results)} image(s) / video(s) drawn in {os.path.abspath(output_dir)} (detections.json beside them)")
    if failed:
        print(f"{len(failed)} image(s) could not be read: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run_video(predictor, source, output_dir: str, args, used: set) -> dict:
    """Annotate a video file or camera (detection.api.Predictor.video): <name>.mp4 and <name>.jsonl."""
    import json

    from tqdm import tqdm

    from detection.engine.launch import ToolError
    from detection.video_io import VideoError, VideoReader, VideoWriter, parse_camera

    camera = parse_camera(source)
    name = f"camera{camera}" if camera is not None else os.path.splitext(os.path.basename(source))[0]
    out_path = os.path.join(output_dir, _output_name(name + ".mp4", used)[:-4] + ".mp4")
    try:
        with VideoReader(camera if camera is not None else source) as probe:
            fps, total = probe.fps, probe.frame_count
    except VideoError as exc:
        raise ToolError(str(exc)) from None
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    writer, frames, with_dets = None, 0, 0
    lines_path = out_path[:-4] + ".jsonl"
    with open(lines_path, "w") as lines, tqdm(total=total, desc=name, unit="frame",
                                               disable=not sys.stderr.isatty()) as bar:
        try:
            for result in predictor.video(camera if camera is not None else source, batch_size=args.batch_size,
                                          max_frames=args.max_frames):
                picture = result.draw(args.score_thresh)
                if writer is None:
                    writer = VideoWriter(out_path, fps, (picture.shape[1], picture.shape[0]))
                writer.write(picture)
                record = result.to_dict(args.score_thresh)
                with_dets += bool(record.get("detections"))
                lines.write(json.dumps({"frame": result.frame_index, **record}) + "\n")
                frames += 1
                bar.update(1)
        except KeyboardInterrupt:  # a camera runs until stopped
            logger.info("stopped by the user after %d frames", frames)
        finally:
            if writer is not None:
                writer.close()
    print(f"{source}: {frames} frames, {with_dets} with detections -> {out_path}")
    return {"file": source if camera is not None else os.path.abspath(source), "output": os.path.abspath(out_path),
            "frames": frames, "fps": fps, "frames_with_detections": with_dets, "detections": os.path.abspath(lines_path)}


def _describe(entry: dict) -> str:
    if "detections" in entry:
        dets = entry["detections"]
        shown = ", ".join(f"{d['class']} {d['score']:.2f}" for d in dets[:5])
        return f"{len(dets)} detection(s)" + (f" ({shown}{', ...' if len(dets) > 5 else ''})" if dets else "")
    if "top" in entry:
        return ", ".join(f"{t['class']} {t['probability']:.3f}" for t in entry["top"][:5])
    return ""


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.engine.launch import run_tool

    return run_tool(demo, args)


if __name__ == "__main__":
    sys.exit(main())
