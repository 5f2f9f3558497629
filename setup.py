"""Build `detection._C` (csrc C++ and, when asked or available, CUDA).

Build with `pip install --no-build-isolation -e .` (isolation would fetch torch again).

Environment:
  FORCE_CUDA=1            compile csrc/cuda/*.cu even without a visible GPU (CI does this once).
  FORCE_CUDA=0            never compile CUDA sources (CPU-only build), even with a GPU present.
  TORCH_CUDA_ARCH_LIST    which GPU architectures to compile for (e.g. "9.0"); torch's own default otherwise.
  CUDA_HOME               the CUDA toolkit; found from /usr/local/cuda or nvcc when unset.
  MAX_JOBS                parallel compile jobs (ninja).
  CC, CXX, LDSHARED       the compilers (distutils' rules). The linked module must need the shared libstdc++: one
                          that carries its own (a wrapper's or LDFLAGS' -static-libstdc++) is relinked with
                          /usr/bin/g++, or the build stops with one line naming the compiler and the fix.
"""
import contextlib
import glob
import importlib.util
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


def _load_elf_check():
    """detection/ops/_elf_check.py by its path: the package cannot be imported while its extension is built."""
    spec = importlib.util.spec_from_file_location("_detection_elf_check",
                                                  os.path.join(ROOT, "detection", "ops", "_elf_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


elf = _load_elf_check()


@contextlib.contextmanager
def _environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _configure_from_environment(compiler):
    """Sets the compiler's executables from CC, CXX, LDSHARED, ... again (distutils' customize_compiler, which
    recent setuptools caches per compiler: its configure_system is called directly there)."""
    if hasattr(compiler, "configure_system"):
        compiler.configure_system()
    else:
        from distutils.sysconfig import customize_compiler

        customize_compiler(compiler)


def link_checked(base):
    """`base` (a build_ext class) checking every module it links: one without libstdc++.so among its ELF NEEDED
    entries carries a private libstdc++ (a compiler wrapper's or LDFLAGS' -static-libstdc++), whose locale state
    crashes the process when a C++ error message formats a number. It is relinked with the system C++ compiler
    (LDSHARED="/usr/bin/g++ -shared", the static flags dropped), or the build fails with one line naming the
    compiler it used and the fix."""

    class LinkCheckedBuildExt(base):
        def build_extension(self, ext):
            calls = self._build_recording_links(ext)
            path = self.get_ext_fullpath(ext.name)
            if elf.private_libstdcxx_problem(path) and not calls:  # an up-to-date module from an earlier build
                os.remove(path)
                calls = self._build_recording_links(ext)
            self._ensure_shared_libstdcxx(path, calls)

        def _build_recording_links(self, ext):
            """super().build_extension(ext); returns the (args, kwargs) of the compiler's link calls."""
            calls, link = [], self.compiler.link

            def recording_link(*args, **kwargs):
                calls.append((args, kwargs))
                return link(*args, **kwargs)

            self.compiler.link = recording_link
            try:
                super().build_extension(ext)
            finally:
                del self.compiler.link  # the class's method again
            return calls

        def _ensure_shared_libstdcxx(self, path, calls):
            problem = elf.private_libstdcxx_problem(path)
            if problem is None:
                return
            from setuptools.errors import LinkError

            used = (self.compiler.compiler_cxx or self.compiler.linker_so or ["the default compiler"])[0]

            def fail(what):
                raise LinkError(f"{used} linked libstdc++ statically into {path} (no libstdc++.so among its ELF "
                                f"NEEDED entries), and relinking with {elf.SYSTEM_CXX} {what}: build with {elf.FIX}")

            if not os.path.exists(elf.SYSTEM_CXX):
                fail("is impossible: it does not exist")
            print(f"detection: {problem}; relinking with {elf.SYSTEM_CXX}", flush=True)
            with _environment(**elf.system_toolchain_environment(os.environ)):
                _configure_from_environment(self.compiler)
            args, kwargs = calls[-1]
            os.remove(path)  # else distutils may skip the link of an up-to-date output
            try:
                self.compiler.link(*args, **kwargs)
            except Exception as exc:  # distutils' LinkError, or an OSError from a broken compiler
                fail(f"failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            if elf.private_libstdcxx_problem(path):
                fail("did not help")
            print(f"detection: relinked {path} with {elf.SYSTEM_CXX}: it needs the shared libstdc++ now", flush=True)

    return LinkCheckedBuildExt


def _build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    return link_checked(BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None))


if __name__ == "__main__":  # pip's build backend runs this file as __main__ too; tests load it as a module
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
