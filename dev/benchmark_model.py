"""Time our Faster R-CNN against torchvision's FasterRCNN built from the same parts, in the same run.

Usage: python dev/benchmark_model.py [--backbones tiny resnet18] [--size 600 800] [--repeats 3] [--warmup 1]
                                       [--threads 2] [--ims-per-batch 1] [--device cpu|cuda]
                                       [--precision fp32|amp|both] [--json results.json]
                                       [--append docs/benchmarks.md]

Both models get the same trunk and per-RoI head (copies of one randomly initialised backbone: no weights are
downloaded), the same RPN and box-predictor weights, the same anchors (3 sizes x 3 ratios at stride 16), the
same proposal counts (py-faster-rcnn: 12000/2000 pre/post-NMS in training, 6000/300 at test), the same sampled
anchors (256) and RoIs (128) per image, the same RoIAlign output size, and images whose size needs no resize.
Inference is timed per image (batch of 1, no_grad), ours also as `fast=True` (detection/export/fast.py:
BatchNorm folded, channels_last, Winograd convolutions after the trunk; inference_mode); a training step is forward + backward + SGD step on
`--ims-per-batch` images with 3 random ground-truth boxes each. Calls alternate (ours, torchvision, backbone
alone) so a busy machine slows all alike; the table shows medians after warm-up, and the same as throughput:
images/s for inference, iterations/s for training. On CUDA every timed call ends with a synchronisation, and
`--precision amp` runs both models under torch.autocast (float16) with a GradScaler in training; the GPU example
is `--device cuda --backbones vgg16 resnet50 --size 600 1000 --precision both` (ResNet-50 is the C4 model).

`--backbones resnet50_fpn` (the example: `--backbones resnet50_fpn --size 800 1067`) compares the model of
configs/faster_rcnn_r50_fpn_coco.yaml with torchvision's fasterrcnn_resnet50_fpn as torchvision builds it for its
COCO weights (FrozenBatchNorm2d, conv1 and layer1 frozen, 91 classes), ours loading torchvision's state dict: the
same weights and every torchvision default (1000/1000 test proposals per level/image, 2000/2000 in training, 512
sampled RoIs). Its second table splits one inference of each model into stages with forward hooks (backbone body,
FPN, RPN head, the rest of the RPN, RoI pooling, box head, predictor and post-processing, the rest).

The ratio is the median of the per-repeat ratios ours / torchvision (each pair measured back to back). "Outside
trunk+head" is our time minus the time spent in the trunk and the per-RoI head (forward, and backward in
training), measured inside the same runs with hooks: everything the detector adds (preprocessing, RPN head,
anchors, matching, sampling, proposal NMS, RoIAlign, predictor, losses, post-processing, optimizer step). It is
measured on the CPU only (host-side hooks cannot time asynchronous CUDA work without synchronising it).
"""
import argparse
import contextlib
import copy
import datetime
import statistics
import sys
import time

import harness

harness.require_detection()

import torch  # noqa: E402
import torchvision  # noqa: E402

from detection.export.fast import optimize_for_inference  # noqa: E402
from harness import timed  # noqa: E402
from model_pairs import FPN_NAME, NUM_CLASSES, build_fpn_pair, build_pair, make_config, make_inputs  # noqa: E402


class StageClock:
    """Forward time per named stage of one model (module hooks; a module called several times accumulates)."""

    def __init__(self, stages):
        self.seconds = {name: 0.0 for name in stages}
        self._t0 = {}
        self._handles = []
        for name, mods in stages.items():
            for mod in mods:
                self._handles.append(mod.register_forward_pre_hook(self._pre(name, mod)))
                self._handles.append(mod.register_forward_hook(self._post(name, mod)))

    def _pre(self, name, mod):
        def hook(m, args):
            self._t0[(name, id(mod))] = time.perf_counter()
        return hook

    def _post(self, name, mod):
        def hook(m, args, out):
            self.seconds[name] += time.perf_counter() - self._t0.pop((name, id(mod)))
        return hook

    def remove(self):
        for h in self._handles:
            h.remove()


def fpn_stages(model, ours: bool):
    """name -> modules whose forward time makes that stage (totals where a stage is "the rest of" one)."""
    if ours:
        return {"total": [model], "backbone": [model.backbone], "fpn": [model.backbone.fpn], "rpn": [model.rpn],
                "rpn head": [model.rpn.head], "roi heads": [model.roi_heads], "roi pooling": [model.roi_heads.pooler],
                "box head": [model.roi_heads.box_head],
                "predictor": [model.roi_heads.cls_score, model.roi_heads.bbox_pred]}
    return {"total": [model], "backbone": [model.backbone], "fpn": [model.backbone.fpn], "rpn": [model.rpn],
            "rpn head": [model.rpn.head], "roi heads": [model.roi_heads], "roi pooling": [model.roi_heads.box_roi_pool],
            "box head": [model.roi_heads.box_head], "predictor": [model.roi_heads.box_predictor]}


def stage_breakdown(s):
    """Inclusive hook times -> exclusive stages, in seconds."""
    return {"backbone body": s["backbone"] - s["fpn"], "FPN": s["fpn"], "RPN head": s["rpn head"],
            "RPN anchors + proposals": s["rpn"] - s["rpn head"], "RoI pooling": s["roi pooling"],
            "box head": s["box head"],
            "predictor + post-processing": s["roi heads"] - s["roi pooling"] - s["box head"],
            "pre/post (resize, map back)": s["total"] - s["backbone"] - s["rpn"] - s["roi heads"]}


class BackboneClock:
    """Times our trunk and per-RoI head inside a real forward (+ backward) with module and tensor hooks.

    Forward: pre/post hooks. Backward: the head's runs from the gradient reaching its output to the gradient
    reaching its input (the pooled RoIs); the trunk's runs from the gradient reaching the feature map to the end
    of `backward()` (it is the last part of the graph), which the caller marks with `end_backward()`.
    """

    def __init__(self, model):
        self.seconds = 0.0
        self._marks = {}
        self._handles = []
        for name, mod in (("trunk", model.backbone), ("head", model.roi_heads.box_head)):
            self._handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self._handles.append(mod.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(mod, args):
            self._marks[name] = time.perf_counter()
            x = args[0]
            if name == "head" and x.requires_grad:
                x.register_hook(self._mark("head_bwd_end"))
        return hook

    def _post(self, name):
        def hook(mod, args, out):
            self.seconds += time.perf_counter() - self._marks.pop(name)
            for t in (out.values() if isinstance(out, dict) else [out]):  # an FPN trunk returns its levels
                if t.requires_grad:
                    t.register_hook(self._mark(f"{name}_bwd_start"))
        return hook

    def _mark(self, key):
        def hook(grad):
            if key.endswith("_bwd_start") and key in self._marks:
                return  # several pyramid levels: the first gradient to arrive starts the trunk's backward
            self._marks[key] = time.perf_counter()
            if key == "head_bwd_end" and "head_bwd_start" in self._marks:
                self.seconds += self._marks.pop(key) - self._marks.pop("head_bwd_start")
        return hook

    def end_backward(self):
        if "trunk_bwd_start" in self._marks:
            self.seconds += time.perf_counter() - self._marks.pop("trunk_bwd_start")
        self._marks.clear()

    def reset(self):
        self.seconds = 0.0
        self._marks.clear()

    def remove(self):
        for h in self._handles:
            h.remove()


def bench(backbone, height, width, repeats, warmup, ims_per_batch, log, device=torch.device("cpu"), amp=False):
    torch.manual_seed(0)
    if backbone == FPN_NAME:
        ours, tv = build_fpn_pair(height, width)
    else:
        ours, tv = build_pair(make_config(backbone, height, width))
    ours, tv = ours.to(device), tv.to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    clock = BackboneClock(ours) if device.type == "cpu" else None
    images, targets = make_inputs(max(ims_per_batch, 1), height, width)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    # fast=True (detection/export/fast.py: BatchNorm folded, channels_last, Winograd heads), timed beside the others
    fast = optimize_for_inference(copy.deepcopy(ours), device)
    keys = ("inf_ours", "inf_tv", "inf_bb", "inf_ratio", "train_ours", "train_tv", "train_bb", "train_ratio",
            "inf_fast", "inf_fast_ratio")
    res = {k: [] for k in keys}
    counts = {}
    opts = {m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)
            for m in (ours, tv)}
    scalers = {m: torch.amp.GradScaler(device.type, enabled=amp) for m in (ours, tv)}

    def autocast():
        return torch.autocast(device.type, dtype=torch.float16) if amp else contextlib.nullcontext()

    def infer(model):
        model.eval()
        with torch.no_grad(), autocast():
            return model(images[:1])

    def infer_fast():
        with torch.inference_mode(), autocast():
            return fast(images[:1])

    def train_step(model):
        model.train()
        with autocast():
            losses = model(images[:ims_per_batch], targets[:ims_per_batch])
        opts[model].zero_grad()
        scalers[model].scale(sum(losses.values())).backward()
        if clock is not None and model is ours:
            clock.end_backward()
        scalers[model].step(opts[model])
        scalers[model].update()
        return losses

    def seconds_in_trunk():
        return clock.seconds if clock is not None else 0.0

    for r in range(warmup + repeats):
        order = (ours, tv) if r % 2 == 0 else (tv, ours)  # alternate who goes first
        t_inf, t_train, dets = {}, {}, {}
        for m in order:
            if clock is not None:
                clock.reset()
            torch.manual_seed(r)
            t_inf[m], dets[m] = timed(lambda: infer(m), device)
            if m is ours:
                bb_inf = seconds_in_trunk()
        t_fast, _ = timed(infer_fast, device)
        for m in order:
            if clock is not None:
                clock.reset()
            torch.manual_seed(r)
            t_train[m], _ = timed(lambda: train_step(m), device)
            if m is ours:
                bb_train = seconds_in_trunk()
        counts = {"det_ours": len(dets[ours][0]["boxes"]), "det_tv": len(dets[tv][0]["boxes"])}
        values = (t_inf[ours], t_inf[tv], bb_inf, t_inf[ours] / t_inf[tv],
                  t_train[ours], t_train[tv], bb_train, t_train[ours] / t_train[tv], t_fast, t_fast / t_inf[tv])
        log(f"  {backbone} {'amp' if amp else 'fp32'} {'warm-up' if r < warmup else 'repeat'} {r}: inference ours "
            f"{values[0]:.3f}s (backbone {bb_inf:.3f}s) fast=True {t_fast:.3f}s tv {values[1]:.3f}s | train ours {values[4]:.3f}s (backbone "
            f"{bb_train:.3f}s) tv {values[5]:.3f}s")
        if r >= warmup:
            for k, v in zip(keys, values):
                res[k].append(v)
    if clock is not None:
        clock.remove()
    med = {k: statistics.median(v) for k, v in res.items()}
    med.update(counts)
    if backbone == FPN_NAME:  # where the time goes: one more inference of each, stage by stage
        for name, model in (("ours", ours), ("tv", tv)):
            stage_clock = StageClock(fpn_stages(model, model is ours))
            runs = []
            for _ in range(max(repeats, 1)):
                for k in stage_clock.seconds:
                    stage_clock.seconds[k] = 0.0
                timed(lambda: infer(model), device)
                runs.append(stage_breakdown(stage_clock.seconds))
            stage_clock.remove()
            med[f"stages_{name}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["trunk_timed"] = clock is not None
    if device.type == "cuda":
        med["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return med


def table(rows, args):
    """rows: (backbone, precision, medians). Throughput: images/s for inference, iterations/s for training."""
    lines = ["| backbone | device | precision | image | what | ours (s) | torchvision (s) | ours /s | torchvision /s "
             "| ratio | ours outside trunk+head |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, precision, m in rows:
        img = f"{args.size[0]}x{args.size[1]}"
        for what, key, unit in (("inference / image", "inf", "img/s"),
                                ("inference / image, fast=True", "inf_fast", "img/s"),
                                (f"train step ({args.ims_per_batch} img)", "train", "it/s")):
            if key == "inf_fast":
                ours, tv_s = m["inf_fast"], m["inf_tv"]
                lines.append(f"| {name} | {args.device} | {precision} | {img} | {what} | {ours:.3f} | {tv_s:.3f} | "
                             f"{1 / ours:.1f} {unit} | {1 / tv_s:.1f} {unit} | {m['inf_fast_ratio']:.2f}x | n/a |")
                continue
            ours = m[f"{key}_ours"]
            if m["trunk_timed"]:
                outside = max(ours - m[f"{key}_bb"], 0.0)
                outside_text = f"{outside:.3f} s ({100 * outside / ours:.0f}%)"
            else:
                outside_text = "n/a"
            lines.append(f"| {name} | {args.device} | {precision} | {img} | {what} | {ours:.3f} | "
                         f"{m[f'{key}_tv']:.3f} | {1 / ours:.1f} {unit} | {1 / m[f'{key}_tv']:.1f} {unit} | "
                         f"{m[f'{key}_ratio']:.2f}x | {outside_text} |")
    for name, precision, m in rows:
        if "stages_ours" in m:
            lines += ["", f"{name} {precision}, one inference by stage (forward hooks; medians):", "",
                      "| stage | ours (s) | torchvision (s) | ratio |", "|---|---|---|---|"]
            for stage, ours in m["stages_ours"].items():
                tv = m["stages_tv"][stage]
                lines.append(f"| {stage} | {ours:.3f} | {tv:.3f} | {ours / tv if tv > 1e-4 else float('nan'):.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["tiny", "resnet18"])
    ap.add_argument("--size", nargs=2, type=int, default=[600, 800], metavar=("H", "W"))
    ap.add_argument("--repeats", type=int, default=0, help="timed repeats (0: 9 for tiny, 3 otherwise)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ims-per-batch", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "amp", "both"), default="fp32",
                    help="amp: torch.autocast float16 (+ GradScaler in training); CUDA only")
    ap.add_argument("--json", default="", metavar="PATH", help="also write the medians to this JSON file")
    ap.add_argument("--append", default="", help="append the table to this markdown file (docs/benchmarks.md)")
    args = ap.parse_args(argv)
    error = harness.require_cuda("benchmark_model.py", args.device)
    if error:
        print(error, file=sys.stderr)
        return 2
    if args.device == "cpu" and args.precision != "fp32":
        print("benchmark_model.py: --precision amp needs --device cuda", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from detection import ops

    device = torch.device(args.device)
    precisions = ("fp32", "amp") if args.precision == "both" else (args.precision,)
    start = time.perf_counter()
    rows = []
    for name in args.backbones:
        repeats = args.repeats or (9 if name == "tiny" else 3)
        for precision in precisions:
            rows.append((name, precision, bench(name, args.size[0], args.size[1], repeats, args.warmup,
                                                args.ims_per_batch, lambda s: print(s, flush=True), device,
                                                amp=precision == "amp")))
    md = table(rows, args)
    where = (f"CUDA {torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else f"torch.set_num_threads({args.threads})")
    note = (f"Medians of {args.repeats or '9 (tiny) / 3'} repeats after {args.warmup} warm-up, {where}, "
            f"random init, {NUM_CLASSES} classes ({FPN_NAME}: 91), detection.ops backend: {ops.BACKEND}. ratio = ours / torchvision "
            f"(< 1: ours faster). Detections at random init: "
            + ", ".join(f"{n} {p} ours {m['det_ours']} / tv {m['det_tv']}" for n, p, m in rows)
            + f". Total benchmark time {time.perf_counter() - start:.0f} s.")
    print(md)
    print(note)
    if args.json:
        harness.write_json(args.json, {"device": where, "machine": harness.machine(device), "size": args.size,
                                       "rows": [{"backbone": n, "precision": p, **m} for n, p, m in rows]})
    if args.append:
        machine = where if device.type == "cuda" else "machine: 2-core CPU (shared)"
        section = (f"\n## Model ({args.device.upper()})\n\n{datetime.date.today().isoformat()}, {machine}, "
                   f"torch {torch.__version__}, torchvision {torchvision.__version__}. "
                   f"`python dev/benchmark_model.py` (FasterRCNN vs torchvision's FasterRCNN with the same "
                   f"trunk, head, anchors and proposal counts).\n\n{md}\n\n{note}\n")
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
