"""The GPU check's steps, in run order: what each runs (commands built when the step starts), with which
environment and timeout, and which parser (gpu_results.py) reads its results. docs/benchmarks.md has the table.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable, Dict, List, Optional

import gpu_results as results
from gpu_runner import Context, Step
from gpu_wheels import find_wheels, wheels_to_install
from harness import ROOT, TOOLS

DEV = os.path.dirname(os.path.abspath(__file__))
# The dataset configs/quickstart.yaml expects: tools/quickstart.py's DATASET_FLAGS (a test keeps the two equal;
# the GPU check cannot import tools/ before the package is built).
QUICKSTART_DATASET = ["--num-train", "200", "--num-test", "60", "--seed", "0"]
TEST_WORKERS = 4  # pytest-xdist processes for the CUDA tests
FPN_SIZE = ("800", "1333")  # what users train R50-FPN at (COCO)

ENV_PROBE = r"""
import importlib.metadata, importlib.util, json, os, sys, torch, torchvision
info = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "cores": len(os.sched_getaffinity(0)),
        "xdist": importlib.metadata.version("pytest-xdist") if importlib.util.find_spec("xdist") else None}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, capability="%d.%d" % (p.major, p.minor), memory_gib=round(p.total_memory / 2**30, 1))
print("GPU_CHECK_ENV " + json.dumps(info))
"""

# After the build: every CUDA kernel registered, and an error message with numbers arrives whole on both devices
# (a private libstdc++ cut it at the first number, or crashed the process).
KERNEL_PROBE = r"""
import torch, detection.ops as ops
missing = [n for n in ("nms", "roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
           if not torch._C._dispatch_has_kernel_for_dispatch_key("detection::" + n, "CUDA")]
cut = []
for device in ("cpu", "cuda"):
    try:
        torch.ops.detection.roi_pool(torch.rand(1, 1, 4, 4, device=device), torch.zeros(1, 5, device=device), 1.0, 0, 3)
        cut.append(device + ": no error")
    except RuntimeError as exc:
        if str(exc).splitlines()[0] != "roi_pool: output size must be positive, got (0, 3)":
            cut.append(device + ": " + repr(str(exc).splitlines()[0]))
print("GPU_CHECK_KERNELS", ("missing: " + ",".join(missing) if missing else "all CUDA kernels registered")
      + ("; error messages CUT: " + "; ".join(cut) if cut else "; error messages whole"))
raise SystemExit(1 if missing or cut else 0)
"""


def cuda_home() -> Optional[str]:
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def env_commands(ctx: Context) -> List[List[str]]:
    return [["bash", "-c", "echo GPU_CHECK_SMI $(nvidia-smi --query-gpu=name,driver_version,memory.total "
                           "--format=csv,noheader 2>&1 | head -1); nvidia-smi 2>&1 | head -20; "
                           "(nvcc --version || \"${CUDA_HOME:-/usr/local/cuda}/bin/nvcc\" --version) 2>&1 | tail -2; "
                           "true"],
            [ctx.python, "-c", ENV_PROBE]]


def wheel_commands(ctx: Context) -> List[List[str]]:
    wheels, problems = find_wheels(ctx.wheels_dir)
    ctx.facts["wheel_problems"] = problems
    todo = wheels_to_install(wheels)
    ctx.facts["wheels_found"], ctx.facts["wheels_installed"] = len(wheels), [os.path.basename(p) for p in todo]
    if not todo:
        return []
    return [[ctx.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
             "--upgrade", "--target", ctx.site, *todo]]


def build_env(ctx: Context) -> Dict[str, str]:
    env = {"FORCE_CUDA": "1", "MAX_JOBS": str(ctx.facts.get("cores") or os.cpu_count() or 4)}
    if ctx.facts.get("capability"):
        env["TORCH_CUDA_ARCH_LIST"] = str(ctx.facts["capability"])
    home = cuda_home()
    if home:
        env["CUDA_HOME"] = home
    return env


def build_commands(ctx: Context) -> List[List[str]]:
    """The toolchain probe (the extension's libstdc++ rule) choosing the compilers, the in-place build, and a
    check that every CUDA kernel is registered."""
    return [[ctx.python, os.path.join(DEV, "gpu_toolchain.py"), "--", ctx.python, "setup.py", "build_ext",
             "--inplace"],
            [ctx.python, "-c", KERNEL_PROBE]]


def test_commands(ctx: Context) -> List[List[str]]:
    return [[ctx.python, os.path.join(DEV, "gpu_tests.py"), "--junit", ctx.path("junit.xml"), "--workers",
             str(TEST_WORKERS), "--", "-q", "-m", "cuda", os.path.join(ROOT, "tests")]]


#: Cascade R-CNN heads (configs/quickstart_cascade.yaml's keys)
CASCADE = ("MODEL.ROI_HEADS.NAME", "cascade", "MODEL.CLASS_AGNOSTIC_BBOX_REG", "True")


def train_args(ctx: Context, name: str, iters: int, *extra: str) -> List[str]:
    return ["--cfg", os.path.join(ROOT, "configs", "quickstart.yaml"), "--no-progress",
            "--set", "DEVICE", "cuda", "SOLVER.MAX_ITER", str(iters), "DATA.ROOT", ctx.path("synthetic"),
            "OUTPUT_DIR", ctx.path(name), *extra]


def train_commands(name: str, *extra: str) -> Callable[[Context], List[List[str]]]:
    def commands(ctx: Context) -> List[List[str]]:
        return [[ctx.python, os.path.join(DEV, "gpu_train_probe.py"), ctx.path(name + ".probe.json"), "--",
                 *train_args(ctx, name, ctx.args.iters, *extra)]]
    return commands


def torchrun_commands(ctx: Context) -> List[List[str]]:
    return [[ctx.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
             os.path.join(TOOLS, "train_net.py"), *train_args(ctx, "torchrun", 20), "--skip-eval"]]


def dev_script(ctx: Context, name: str, *args: str) -> List[str]:
    return [ctx.python, os.path.join(DEV, name), *args]


def steps() -> List[Step]:
    return [
        Step("env", 60, env_commands, parse=results.parse_env),
        Step("wheels", 120, wheel_commands, parse=results.parse_wheels),
        Step("build", 420, build_commands, env=build_env, parse=results.parse_build),
        Step("tests", 300, test_commands, parse=results.parse_tests),
        Step("data", 120, lambda ctx: [[ctx.python, os.path.join(TOOLS, "make_synthetic_dataset.py"), "--out",
                                        ctx.path("synthetic"), *QUICKSTART_DATASET]]),
        Step("train_fp32", 240, train_commands("train_fp32"), parse=results.parse_train),
        Step("train_amp", 240, train_commands("train_amp", "SOLVER.AMP", "True"), parse=results.parse_train),
        Step("train_cascade_amp", 240, train_commands("train_cascade_amp", "SOLVER.AMP", "True", *CASCADE),
             parse=results.parse_train),
        Step("torchrun", 180, torchrun_commands, parse=results.parse_torchrun),
        Step("bench_ops", 180, lambda ctx: [dev_script(ctx, "benchmark_ops.py", "--device", "cuda", "--repeats", "50",
                                                       "--markdown", "--json", ctx.path("bench_ops.json"))],
             parse=results.parse_bench_ops),
        Step("bench_soft_nms", 120, lambda ctx: [dev_script(ctx, "benchmark_soft_nms.py", "--device", "cuda",
                                                             "--json", ctx.path("bench_soft_nms.json"))]),
        Step("batch_scaling", 300, lambda ctx: [dev_script(
            ctx, "benchmark_batch_scaling.py", "--device", "cuda", "--size", *FPN_SIZE, "--batches", "2", "8", "16",
            "--precision", "both", "--repeats", "5", "--warmup", "2", "--json", ctx.path("batch_scaling.json"))],
             parse=results.parse_batch_scaling),
        Step("launches", 180, lambda ctx: [dev_script(
            ctx, "profile_launches.py", "--device", "cuda", "--size", *FPN_SIZE, "--train-batch", "2",
            "--iterations", "3", "--json", ctx.path("launches.json"))], parse=results.parse_launches),
        Step("bench_model", 300, lambda ctx: [
            dev_script(ctx, "benchmark_model.py", "--device", "cuda", "--backbones", "vgg16", "--size", "600", "1000",
                       "--precision", "both", "--repeats", "10", "--warmup", "3", "--json",
                       ctx.path("bench_model.json")),
            dev_script(ctx, "benchmark_model.py", "--device", "cuda", "--backbones", "resnet50_fpn", "--size",
                       *FPN_SIZE, "--precision", "fp32", "--repeats", "10", "--warmup", "3", "--json",
                       ctx.path("bench_model_fpn.json"))], parse=results.parse_bench_model),
    ]


STEP_NAMES = [s.name for s in steps()]
