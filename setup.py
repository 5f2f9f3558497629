"""Build `detection._C` (csrc C++ and, when asked or available, CUDA).

Build with `pip install --no-build-isolation -e .` (isolation would fetch torch again).

Environment:
  FORCE_CUDA=1            compile csrc/cuda/*.cu even without a visible GPU (CI does this once).
  FORCE_CUDA=0            never compile CUDA sources (CPU-only build), even with a GPU present.
  TORCH_CUDA_ARCH_LIST    which GPU architectures to compile for (e.g. "9.0"); torch's own default otherwise.
  CUDA_HOME               the CUDA toolkit; found from /usr/local/cuda or nvcc when unset.
  MAX_JOBS                parallel compile jobs (ninja).
"""
import glob
import os
import shutil
import site
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """The CUDA toolkit root; torch would guess /usr/local from an nvcc wrapper in /usr/local/bin, which fails."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for candidate in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        return os.path.dirname(os.path.dirname(real))
    return None


def _cuda_library_includes():
    """Headers of the CUDA libraries torch's headers include (cusparse.h, cublas_v2.h, ...).

    The pip CUDA build of torch ships them inside site-packages (nvidia/cu13/include, or nvidia/<lib>/include for
    older layouts) rather than in the toolkit, so nvcc would not find them on its own.
    """
    dirs = []
    for sp in site.getsitepackages() + [site.getusersitepackages()]:
        for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
            for d in sorted(glob.glob(os.path.join(sp, pattern))):
                if os.path.isdir(d) and d not in dirs:
                    dirs.append(d)
    return dirs


def _want_cuda(cuda_home):
    force = os.environ.get("FORCE_CUDA")
    if force == "0":
        return False
    if force == "1":
        if cuda_home is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the folder holding bin/nvcc")
        return True
    import torch

    return cuda_home is not None and torch.cuda.is_available()


def get_extensions():
    cuda_home = _find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension reads it
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    csrc = os.path.join("csrc")
    sources = [os.path.join(csrc, "vision.cpp")] + sorted(glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    define_macros = []
    extra_compile_args = {"cxx": ["-O3"]}
    include_dirs = [os.path.abspath(csrc)]

    if _want_cuda(cuda_home) and cuda_sources:
        print(f"detection: building CUDA ops with CUDA_HOME={cuda_home}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<torch default>')}")
        extension = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
        include_dirs += _cuda_library_includes()
    else:
        print("detection: building CPU-only ops (FORCE_CUDA=1 to compile the CUDA sources)")
        extension = CppExtension

    ops = extension(
        "detection._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
    )
    return [ops]


def _build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)


setup(
    name="detection",
    version="0.1.0",
    description="Faster R-CNN object detection toolkit with compiled NMS / RoIAlign / RoIPool",
    packages=find_packages(include=["detection", "detection.*"]),
    python_requires=">=3.10",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": _build_ext_class()},
    zip_safe=False,
)
