#!/usr/bin/env python
"""The detection quick start (`make demo`): generate data -> train -> test_net -> demo, on the CPU.

  python tools/quickstart.py [--cfg configs/quickstart.yaml] [--fresh] [--num-demo 8]

(--cfg configs/quickstart_fpn.yaml: the same run with a feature pyramid; docs/benchmarks.md compares them.)

1. writes the synthetic VOC + COCO dataset to DATA.ROOT (kept when it exists with the same parameters);
2. trains the config (`tools/train_net.py --resume`: a finished run in OUTPUT_DIR is reused, an interrupted one
   continues; --fresh moves an earlier OUTPUT_DIR aside to OUTPUT_DIR.old first);
3. evaluates it on the held-out test split (`tools/test_net.py`: VOC mAP@0.5, PR curves);
4. draws the detections on held-out test images (`tools/demo.py`) and a contact sheet of them;
then prints the mAP, the time of each step and where the pictures are. Exit code: the first failing step's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# The dataset the quick-start configs expect (tools/make_synthetic_dataset.py flags).
DATASET_FLAGS = ["--num-train", "200", "--num-test", "60", "--seed", "0"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quickstart.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default=os.path.join(ROOT, "configs", "quickstart.yaml"))
    p.add_argument("--fresh", action="store_true", help="train from scratch even if OUTPUT_DIR holds a run")
    p.add_argument("--num-demo", type=int, default=8, help="held-out images to draw (default 8)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import demo
    import make_synthetic_dataset
    import test_net
    import train_net

    from detection.config import load_config

    cfg = load_config(args.cfg)
    out, data_root = cfg.OUTPUT_DIR, cfg.DATA.ROOT
    times = {}

    def step(name, fn, argv):
        print(f"\n=== {name}: {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        code = fn(argv)
        times[name] = time.perf_counter() - start
        if code:
            print(f"quickstart: step '{name}' failed with exit code {code}", file=sys.stderr)
        return code

    total = time.perf_counter()
    code = step("dataset", make_synthetic_dataset.main, ["--out", data_root, *DATASET_FLAGS])
    if code:
        return code
    if args.fresh and os.path.isdir(out):
        shutil.rmtree(out + ".old", ignore_errors=True)
        os.replace(out, out + ".old")
        print(f"moved the earlier run to {out}.old")
    code = step("train", train_net.main, ["--cfg", args.cfg, "--resume", "--skip-eval"])
    if code:
        return code
    eval_dir = os.path.join(out, "inference")
    code = step("test", test_net.main, ["--cfg", args.cfg, "--output", eval_dir])
    if code:
        return code
    test_split = os.path.join(data_root, "VOC2007", "ImageSets", "Main", "test.txt")
    with open(test_split) as f:
        ids = [line.strip() for line in f if line.strip()][:args.num_demo]
    images = [os.path.join(data_root, "VOC2007", "JPEGImages", f"{i}.jpg") for i in ids]
    demo_dir = os.path.join(out, "demo")
    code = step("demo", demo.main, ["--cfg", args.cfg, "--input", *images, "--output", demo_dir])
    if code:
        return code
    sheet = _contact_sheet(demo_dir)
    total = time.perf_counter() - total

    metrics = json.load(open(os.path.join(eval_dir, "metrics.json")))
    print("\n=== quick start done")
    print(f"mAP@0.5 on the {metrics['images']} held-out test images: {metrics['mAP']:.3f}  (per class: "
          + ", ".join(f"{k} {v:.3f}" for k, v in metrics["AP"].items() if v is not None) + ")")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total:.0f} s")
    print(f"drawn detections: {os.path.abspath(demo_dir)}/*.jpg\ncontact sheet:    {os.path.abspath(sheet)}")
    print(f"PR curves:        {os.path.abspath(eval_dir)}/pr_*.png\ncheckpoint:       "
          f"{os.path.abspath(os.path.join(out, 'model_final.pth'))}")
    return 0


def _contact_sheet(demo_dir: str) -> str:
    from detection.data.image_io import read_image_rgb
    from detection.utils.visualize import make_contact_sheet, save_image

    entries = json.load(open(os.path.join(demo_dir, "detections.json")))["images"]
    pictures = [read_image_rgb(e["output"]) for e in entries]
    captions = [f"{os.path.basename(e['file'])}: {len(e['detections'])} found" for e in entries]
    path = os.path.join(demo_dir, "contact_sheet.jpg")
    save_image(path, make_contact_sheet(pictures, captions, ncols=4, cell_size=(320, 240),
                                        title="quick start: held-out test images"))
    return path


if __name__ == "__main__":
    sys.exit(main())
