"""Time the compiled ops (detection.ops) against torchvision.ops on the same inputs, in the same run.

Usage: python dev/benchmark_ops.py [--repeats 30] [--threads N] [--device all|cpu|cuda] [--markdown]
                                     [--json results.json]

Prints a table: op, size, ours ms (median), torchvision ms (median), ratio (ours / torchvision; < 1 is faster).
Our and torchvision's calls alternate, so a busy machine slows both alike. CPU, and CUDA when a GPU is visible
(and the CUDA kernels were built); --device picks one. CUDA timings synchronise before and after each call.
Targets (exit code 1 when missed or when results differ): every op at most 1.0x torchvision on both devices,
NMS at 12,000 boxes at most 0.5x, RoIAlign forward+backward on the CPU at most 0.7x. Inputs are seeded and
realistic: NMS on RPN-like proposals (batched_nms: 5,000 of them in 80 classes, the RoI heads' post-processing)
clustered around objects of a 600 x 1000 image; RoIAlign / RoIPool on a VGG16 conv5 map (stride 16) of a
600 x 800 image with 256 proposals.
"""
import argparse
import os
import sys

import harness

harness.require_detection()
os.environ.setdefault("DETECTION_OPS", "compiled")

import torch  # noqa: E402
import torchvision  # noqa: E402

from detection import ops  # noqa: E402

# (device, op, size) -> ratio that must not be exceeded (the issues' targets); every other op must be <= 1.0.
TARGETS = {("cpu", "nms", "12000 boxes"): 0.5, ("cpu", "roi_align fwd+bwd", "256 RoIs"): 0.7,
           ("cuda", "nms", "12000 boxes"): 0.5}


def target_for(device: str, op: str, size: str) -> float:
    return TARGETS.get((device, op, size), 1.0)


def rpn_like_boxes(n, height=600, width=1000, objects=40, seed=0, dtype=torch.float32):
    """n proposals xyxy [n, 4] and scores [n]: 3/4 jittered around `objects` boxes, 1/4 anywhere (seeded)."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.exp(torch.empty(objects, 2).uniform_(3.0, 6.0, generator=g))  # 20 .. 400 px
    wh = torch.minimum(wh, torch.tensor([width * 0.9, height * 0.9]))
    ctr = torch.rand(objects, 2, generator=g) * (torch.tensor([width, height]) - wh) + wh / 2
    near = n * 3 // 4
    obj = torch.randint(0, objects, (near,), generator=g)
    jit_ctr = ctr[obj] + torch.randn(near, 2, generator=g) * wh[obj] * 0.15
    jit_wh = wh[obj] * torch.exp(torch.randn(near, 2, generator=g) * 0.2)
    far = n - near
    far_wh = torch.exp(torch.empty(far, 2).uniform_(2.5, 6.0, generator=g))
    far_ctr = torch.rand(far, 2, generator=g) * torch.tensor([width, height])
    c = torch.cat([jit_ctr, far_ctr])
    s = torch.cat([jit_wh, far_wh])
    boxes = torch.cat([c - s / 2, c + s / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    # Near boxes score higher on average, with noise; all scores distinct.
    scores = torch.cat([0.5 + 0.5 * torch.rand(near, generator=g), 0.6 * torch.rand(far, generator=g)])
    return boxes.to(dtype), scores.to(dtype)


def roi_inputs(device, rois=256, channels=256, height=38, width=50, stride=16, seed=0):
    """A [1, C, H, W] feature map and rois [K, 5] (batch 0, xyxy in image pixels) of proposal-like sizes."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(1, channels, height, width, generator=g)
    img_w, img_h = width * stride, height * stride
    wh = torch.exp(torch.empty(rois, 2).uniform_(3.0, 6.0, generator=g))
    xy = torch.rand(rois, 2, generator=g) * torch.tensor([img_w, img_h])
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_h - 1)
    r = torch.cat([torch.zeros(rois, 1), boxes], dim=1)
    return feat.to(device), r.to(device), 1.0 / stride


def time_pair(ours, theirs, repeats, device, warmup=3):
    """Median milliseconds of two callables, run alternately."""
    times = harness.alternating({"ours": ours, "theirs": theirs}, repeats, warmup, device)
    return harness.median(times["ours"]) * 1e3, harness.median(times["theirs"]) * 1e3


def cases(device):
    """(op, size, ours, theirs) for one device; inputs built once."""
    out = []
    for n in (2000, 12000):
        boxes, scores = rpn_like_boxes(n)
        boxes, scores = boxes.to(device), scores.to(device)
        out.append(("nms", f"{n} boxes", lambda b=boxes, s=scores: ops.nms(b, s, 0.7),
                    lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.7)))
    # the RoI heads' class-wise NMS: 5,000 candidates of 80 classes (one compiled call against torchvision's)
    boxes, scores = rpn_like_boxes(5000, seed=1)
    labels = torch.randint(0, 80, (5000,), generator=torch.Generator().manual_seed(1))
    boxes, scores, labels = boxes.to(device), scores.to(device), labels.to(device)
    out.append(("batched_nms", "5000 boxes, 80 classes", lambda: ops.batched_nms(boxes, scores, labels, 0.5),
                lambda: torchvision.ops.batched_nms(boxes, scores, labels, 0.5)))

    feat, rois, scale = roi_inputs(device)
    grad = torch.randn(rois.shape[0], feat.shape[1], 7, 7, generator=torch.Generator().manual_seed(1)).to(device)
    size = f"{rois.shape[0]} RoIs"

    def fwd(fn, **kw):
        return lambda: fn(feat, rois, (7, 7), scale, **kw)

    def fwd_bwd(fn, **kw):
        def run():
            x = feat.detach().requires_grad_()
            fn(x, rois, (7, 7), scale, **kw).backward(grad)
            return x.grad
        return run

    align = dict(sampling_ratio=2, aligned=True)
    out.append(("roi_align fwd", size, fwd(ops.roi_align, **align), fwd(torchvision.ops.roi_align, **align)))
    out.append(("roi_align fwd+bwd", size, fwd_bwd(ops.roi_align, **align),
                fwd_bwd(torchvision.ops.roi_align, **align)))
    out.append(("roi_pool fwd", size, fwd(ops.roi_pool), fwd(torchvision.ops.roi_pool)))
    out.append(("roi_pool fwd+bwd", size, fwd_bwd(ops.roi_pool), fwd_bwd(torchvision.ops.roi_pool)))
    return out


def check_same(ours, theirs):
    """The two implementations must agree before their speed means anything."""
    a, b = ours(), theirs()
    if a.dtype in (torch.int64, torch.int32):
        return torch.equal(a, b)
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of each op (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: this machine's cores)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="which devices to time (all: the CPU, and CUDA when available)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    if ops.BACKEND != "compiled":
        sys.exit("benchmark_ops.py compares the compiled ops with torchvision: unset DETECTION_OPS")
    cores = harness.cores()
    threads = args.threads or cores
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; CPU cores: {cores}; "
          f"torch.set_num_threads({threads}); median of {args.repeats} calls")

    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
            print(f"CUDA: {torch.cuda.get_device_name(0)}")
        elif args.device == "cuda":
            sys.exit("benchmark_ops.py --device cuda: no CUDA device is visible")

    rows, failed = [], []
    for device in devices:
        for op, size, ours, theirs in cases(device):
            try:
                same = check_same(ours, theirs)
                t_ours, t_tv = time_pair(ours, theirs, args.repeats, device)
            except (RuntimeError, NotImplementedError) as exc:  # e.g. CUDA kernels not built
                rows.append((device.type, op, size, "n/a", "n/a", "n/a", f"error: {str(exc).splitlines()[0][:60]}"))
                continue
            ratio = t_ours / t_tv
            limit = target_for(device.type, op, size)
            verdict = ("ok" if ratio <= limit else "MISSED") + f" (target <= {limit:.2f})"
            if not same:
                verdict += " RESULTS DIFFER"
            if not same or ratio > limit:
                failed.append((device.type, op, size))
            rows.append((device.type, op, size, f"{t_ours:.3f}", f"{t_tv:.3f}", f"{ratio:.2f}", verdict.strip()))

    header = ("device", "op", "size", "ours ms", "torchvision ms", "ratio", "target")
    print((harness.markdown_table if args.markdown else harness.text_table)(header, rows))
    if failed:
        print(f"targets missed or results differing: {failed}")
    if args.json:
        harness.write_json(args.json, {"machine": harness.machine(devices[-1] if devices else "cpu"),
                                       "rows": [dict(zip(header, r)) for r in rows],
                                       "failed": [list(f) for f in failed]})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
