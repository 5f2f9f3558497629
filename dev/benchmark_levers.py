#!/usr/bin/env python
r"""The accuracy levers against the plain detector, over seeds: Cascade R-CNN, Soft-NMS and weight EMA, each alone.

    python dev/benchmark_levers.py                                   # both sets, seeds 1 2 3, outputs/levers
    python dev/benchmark_levers.py --sets quickstart --seeds 1 --out /tmp/levers --max-iter 20   # a smoke run
    python dev/benchmark_levers.py --json levers.json --plot docs/images/levers.png     # the table as a picture too

For every set (quickstart: configs/quickstart.yaml on tools/quickstart.py's data; hard: configs/quickstart_hard.yaml
on the smaller, more crowded and overlapping generated set) and seed, one training at a time:
  - `ema`: the plain detector trained with SOLVER.EMA on. Its raw weights (`model_raw`) are the plain detector: EMA
    only reads the weights, so training is unchanged - checked bit for bit against `plain`, a run without EMA, for
    the first seed (which also gives EMA's training-time cost);
  - `cascade`: the same with MODEL.ROI_HEADS.NAME cascade (configs/quickstart_cascade.yaml's two keys).
Then each model is evaluated once per variant on the test split, in this process: plain (raw weights, hard NMS),
Soft-NMS linear and gaussian (raw weights), EMA (averaged weights, hard NMS), cascade (hard NMS) and, as a
combination, cascade + gaussian Soft-NMS: VOC mAP@0.5 (VOC07 11-point, py-faster-rcnn rules) and COCO AP / AP50 /
AP75 (pycocotools on the same detections), with the inference time of the split. Prints mean, sample standard
deviation and range over the seeds, and time ratios to the plain detector measured in the same stretch; the load
average is recorded before and after every step. Finished steps are kept in --out (run.json / eval_*.json), so an
interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import harness
from harness import ROOT

harness.require_detection()
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

#: set name -> (config, tools/make_synthetic_dataset.py flags)
SETS = {
    "quickstart": ("configs/quickstart.yaml", ["--num-train", "200", "--num-test", "60", "--seed", "0"]),
    "hard": ("configs/quickstart_hard.yaml", ["--num-train", "300", "--num-test", "100", "--seed", "1",
                                              "--min-size", "12", "--max-size", "56", "--max-objects", "12",
                                              "--max-same-iou", "0.55", "--max-occlusion", "0.5",
                                              "--p-cluster", "0.8"]),
}
CASCADE = ["MODEL.ROI_HEADS.NAME", "cascade", "MODEL.CLASS_AGNOSTIC_BBOX_REG", "True"]
#: (variant, run, checkpoint key, TEST.NMS_METHOD)
VARIANTS = [("plain", "ema", "model_raw", "hard"), ("soft-nms linear", "ema", "model_raw", "linear"),
            ("soft-nms gaussian", "ema", "model_raw", "gaussian"), ("ema", "ema", "model", "hard"),
            ("cascade", "cascade", "model", "hard"), ("cascade + gaussian", "cascade", "model", "gaussian")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--out", default=os.path.join(ROOT, "outputs", "levers"))
    p.add_argument("--data", default=os.path.join(ROOT, "datasets"), help="where the generated sets are written")
    p.add_argument("--ema-decay", type=float, default=0.98, help="SOLVER.EMA.DECAY of the ema runs (default 0.98)")
    p.add_argument("--ema-tau", type=float, default=50.0, help="SOLVER.EMA.TAU of the ema runs (default 50)")
    p.add_argument("--max-iter", type=int, default=0, help="override SOLVER.MAX_ITER (smoke runs); 0 = the config's")
    p.add_argument("--threads", type=int, default=2, help="torch threads of trainings and evaluations (default 2)")
    p.add_argument("--time-repeats", type=int, default=3,
                   help="alternating inference passes per variant timed on the first seed's models (default 3)")
    p.add_argument("--json", default=None, help="also write the table's numbers to this JSON file")
    p.add_argument("--plot", default=None,
                   help="also draw the table as a PNG: per set and metric, each seed's value and the mean per variant")
    return p.parse_args(argv)


def _load() -> list:
    return [round(v, 2) for v in os.getloadavg()]


def _train(args, name: str, cfg: str, data_root: str, seed: int, folder: str, extra) -> dict:
    """One train_net run (a subprocess, the only job of this script while it runs); its timing in run.json."""
    done = harness.read_json(os.path.join(folder, "run.json"))
    if done and os.path.isfile(os.path.join(folder, "model_final.pth")):
        return done
    if os.path.isdir(folder):  # an interrupted run: start it again
        import shutil

        shutil.rmtree(folder)
    overrides = ["RNG_SEED", str(seed), "OUTPUT_DIR", folder, "DATA.ROOT", data_root, "DEVICE", "cpu", *extra]
    if args.max_iter:
        overrides += ["SOLVER.MAX_ITER", str(args.max_iter), "SOLVER.STEPS", f"[{args.max_iter * 4 // 5}]"]
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--cfg", os.path.join(ROOT, cfg),
           "--skip-eval", "--no-progress", "--set", *overrides]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": str(args.threads)}
    before = _load()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"training {name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    record = {"run": name, "seed": seed, "train_s": wall, "load_before": before, "load_after": _load()}
    harness.write_json(os.path.join(folder, "run.json"), record)
    print(f"  trained {name} seed {seed}: {wall:.0f} s (load {before} -> {record['load_after']})", flush=True)
    return record


def _evaluate(folder: str, key: str, method: str, data_root: str) -> dict:
    """VOC and COCO metrics of one checkpoint entry with one NMS method on the test split, and the inference time."""
    import torch

    from detection.config import load_config
    from detection.data.build import build_detection_dataset, build_detection_test_loader
    from detection.engine.inference import predict_dataset
    from detection.engine.tasks import get_task
    from detection.evaluation.coco import COCOEvaluator
    from detection.evaluation.voc import VOCEvaluator

    path = os.path.join(folder, f"eval_{key}_{method}.json")
    done = harness.read_json(path)
    if done:
        return done
    cfg = load_config(os.path.join(folder, "config.yaml"), ["TEST.NMS_METHOD", method, "DATA.NUM_WORKERS", "0"])
    task = get_task(cfg)
    model = task.build_model_for_weights(cfg)
    model.load_state_dict(torch.load(os.path.join(folder, "model_final.pth"), weights_only=True)[key])
    model.eval()
    dataset = build_detection_dataset(cfg, is_train=False)
    loader = build_detection_test_loader(cfg, dataset)
    before = _load()
    start = time.perf_counter()
    predictions = predict_dataset(task, cfg, model, loader, torch.device("cpu"), progress=False)
    test_s = time.perf_counter() - start
    by_path = {dataset.records[i]["path"]: out for i, out in predictions}
    voc = VOCEvaluator(os.path.join(data_root, "VOC2007"), "test", list(dataset.class_names), use_07_metric="true")
    voc.process([dataset.records[i] for i, _ in predictions], [out for _, out in predictions])
    coco_cfg = load_config(os.path.join(folder, "config.yaml"), [
        "DATA.FORMAT", "coco", "DATA.TEST_SET", "annotations/instances_test.json:VOC2007/JPEGImages"])
    coco_set = build_detection_dataset(coco_cfg, is_train=False)
    coco = COCOEvaluator(coco_set.meta["annotation_file"], coco_set.meta.get("contiguous_to_coco_id"))
    coco.process(coco_set.records, [by_path[r["path"]] for r in coco_set.records])
    bbox = coco.evaluate()["bbox"]
    record = {"mAP50_voc": voc.evaluate()["mAP"], "AP": bbox["AP"], "AP50": bbox["AP50"], "AP75": bbox["AP75"],
              "test_s": test_s, "images": len(predictions), "load": [before, _load()]}
    harness.write_json(path, record)
    return record


def _time_inference(base: str, data_root: str, repeats: int) -> dict:
    """Median seconds of one pass over the test split's images (in memory) for the plain detector with each NMS
    method, and the cascade: the passes alternate, in a turning order, so the machine's load hits them alike."""
    import torch

    from detection.config import load_config
    from detection.data.build import build_detection_dataset
    from detection.data.image_io import read_image_rgb
    from detection.engine.tasks import get_task

    path = os.path.join(base, "inference_times.json")
    done = harness.read_json(path)
    if done:
        return done
    fns, images = {}, None
    for variant, run, key, method in VARIANTS:
        if variant == "ema":  # the plain detector with other weights: the same cost
            continue
        folder = os.path.join(base, run)
        cfg = load_config(os.path.join(folder, "config.yaml"), ["TEST.NMS_METHOD", method])
        model = get_task(cfg).build_model_for_weights(cfg)
        model.load_state_dict(torch.load(os.path.join(folder, "model_final.pth"), weights_only=True)[key])
        model.eval()
        if images is None:
            dataset = build_detection_dataset(cfg, is_train=False)
            images = [torch.from_numpy(read_image_rgb(r["path"])).permute(2, 0, 1).float() / 255.0
                      for r in dataset.records]

        def one_pass(model=model):
            with torch.no_grad():
                for img in images:
                    model([img])

        fns[variant] = one_pass
    before = _load()
    times = harness.alternating(fns, repeats=repeats, warmup=0)
    record = {"median_s": {k: harness.median(v) for k, v in times.items()}, "all_s": times, "images": len(images),
              "load": [before, _load()]}
    harness.write_json(path, record)
    return record


def _spread(values) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f} ({min(values):.3f}-{max(values):.3f})"


def plot_levers(results: dict, path: str) -> None:
    """One panel per set and metric (VOC mAP@0.5, COCO AP, COCO AP75): a bar at the mean of every variant, a dot per
    seed, and a dashed line at the plain detector's mean, so a gain reads against the spread of the seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [("mAP50_voc", "VOC mAP@0.5"), ("AP", "COCO AP"), ("AP75", "COCO AP75")]
    names = [v[0] for v in VARIANTS]
    sets = list(results["sets"])
    fig = Figure(figsize=(4.2 * len(metrics), 3.4 * len(sets)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(sets), len(metrics), squeeze=False)
    for row, set_name in zip(axes, sets):
        rows = results["sets"][set_name]["rows"]
        for ax, (key, label) in zip(row, metrics):
            values = [[r[key] for r in rows[n]] for n in names]
            means = [statistics.mean(v) for v in values]
            ax.bar(range(len(names)), means, color=["#888888"] + ["#4c72b0"] * (len(names) - 1), alpha=0.6)
            for x, v in enumerate(values):
                ax.plot([x] * len(v), v, "o", color="black", markersize=3)
            ax.axhline(means[0], color="#444444", linestyle="--", linewidth=0.8)
            low = min(min(v) for v in values)
            high = max(max(v) for v in values)
            ax.set_ylim(low - 0.4 * (high - low) - 0.01, high + 0.2 * (high - low) + 0.01)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{set_name}: {label}", fontsize=10)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    results = {"machine": harness.machine(), "ema": {"decay": args.ema_decay, "tau": args.ema_tau}, "sets": {}}
    for set_name in args.sets:
        cfg, flags = SETS[set_name]
        data_root = os.path.join(args.data, "synthetic" if set_name == "quickstart" else f"synthetic_{set_name}")
        if harness.run_script(os.path.join(ROOT, "tools", "make_synthetic_dataset.py"),
                              ["--out", data_root, "--quiet", *flags]):
            raise SystemExit(f"could not generate the {set_name} set in {data_root}")
        ema = ["SOLVER.EMA.ENABLED", "True", "SOLVER.EMA.DECAY", str(args.ema_decay), "SOLVER.EMA.TAU",
               str(args.ema_tau)]
        rows = {v[0]: [] for v in VARIANTS}
        train = {"plain": [], "ema": [], "cascade": []}
        for i, seed in enumerate(args.seeds):
            base = os.path.join(args.out, set_name, f"seed{seed}")
            print(f"{set_name} seed {seed}", flush=True)
            runs = {}
            if i == 0:  # EMA reads the weights only: its raw weights must be the plain run's, bit for bit
                runs["plain"] = _train(args, "plain", cfg, data_root, seed, os.path.join(base, "plain"), [])
            runs["ema"] = _train(args, "ema", cfg, data_root, seed, os.path.join(base, "ema"), ema)
            runs["cascade"] = _train(args, "cascade", cfg, data_root, seed, os.path.join(base, "cascade"), CASCADE)
            if i == 0:
                plain = torch.load(os.path.join(base, "plain", "model_final.pth"), weights_only=True)["model"]
                raw = torch.load(os.path.join(base, "ema", "model_final.pth"), weights_only=True)["model_raw"]
                same = plain.keys() == raw.keys() and all(torch.equal(plain[k], raw[k]) for k in plain)
                results.setdefault("raw_equals_plain", {})[set_name] = same
                print(f"  EMA run's raw weights {'==' if same else '!='} the plain run's (bit for bit)", flush=True)
            for run, rec in runs.items():
                train[run].append(rec["train_s"])
            for variant, run, key, method in VARIANTS:
                rec = _evaluate(os.path.join(base, run), key, method, data_root)
                rows[variant].append(rec)
                print(f"  {variant:20s} mAP50(VOC) {rec['mAP50_voc']:.3f}  AP {rec['AP']:.3f}  AP75 {rec['AP75']:.3f}"
                      f"  test {rec['test_s']:.1f} s", flush=True)
            if i == 0:
                timing = _time_inference(base, data_root, args.time_repeats)
                print("  inference passes (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                                   timing["median_s"].items()), flush=True)
        results["sets"][set_name] = {"rows": rows, "train_s": train, "inference": timing}
        table = []
        plain_test = timing["median_s"]["plain"]
        for variant, run, _, _ in VARIANTS:
            recs = rows[variant]
            med = timing["median_s"]
            test_ratio = med["plain" if variant == "ema" else variant] / plain_test
            if run == "cascade":  # cascade / plain = (cascade / ema run, per seed) x (ema run / plain)
                train_ratio = (statistics.median(c / e for c, e in zip(train["cascade"], train["ema"]))
                               * train["ema"][0] / train["plain"][0])
            elif variant == "ema":
                train_ratio = train["ema"][0] / train["plain"][0]
            else:
                train_ratio = 1.0
            table.append([variant, _spread([r["mAP50_voc"] for r in recs]), _spread([r["AP"] for r in recs]),
                          _spread([r["AP75"] for r in recs]), f"{train_ratio:.2f}x", f"{test_ratio:.2f}x"])
        print(f"\n{set_name}: {len(args.seeds)} seeds, plain training {train['plain'][0]:.0f} s, plain inference "
              f"{plain_test:.1f} s for {timing['images']} images (ratios: train per seed against the same seed's run, "
              f"test by alternating passes over the first seed's models)")
        print(harness.text_table(["variant", "VOC mAP@0.5", "COCO AP", "COCO AP75", "train", "test"], table))
    if args.json:
        harness.write_json(args.json, results)
    if args.plot:
        plot_levers(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
