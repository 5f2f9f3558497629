"""The extension never runs with a private libstdc++ (issue 19): detection/ops/_elf_check.py tells a module linked
with -static-libstdc++ from one that needs libstdc++.so, setup.py relinks the first kind with the system compiler,
detection.ops refuses to load it, and the compiled ops' error messages keep their numbers (a private libstdc++ cut
them at the first number: "got (")."""
import importlib.machinery
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from detection.ops import _backend, _elf_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GXX = _elf_check.SYSTEM_CXX

SOURCE = _elf_check.PROBE_SOURCE  # formats a number through std::ostream, as the crashing messages did

needs_gxx = pytest.mark.skipif(not os.path.exists(GXX), reason=f"no system C++ compiler at {GXX}")


@pytest.fixture(scope="module")
def shared_objects(tmp_path_factory):
    """{"dynamic": path, "static": path}: one tiny C++ shared object linked both ways by the system compiler."""
    folder = tmp_path_factory.mktemp("elf")
    src = folder / "describe.cpp"
    src.write_text(SOURCE)
    out = {}
    for kind, flags in (("dynamic", []), ("static", ["-static-libstdc++"])):
        out[kind] = str(folder / f"{kind}.so")
        subprocess.run([GXX, "-shared", "-fPIC", *flags, str(src), "-o", out[kind]], check=True, timeout=120)
    return out


@needs_gxx
def test_the_check_tells_a_static_libstdcxx_from_the_shared_one(shared_objects):
    dynamic = _elf_check.needed_libraries(shared_objects["dynamic"])
    static = _elf_check.needed_libraries(shared_objects["static"])
    assert any(n.startswith("libstdc++.so") for n in dynamic) and "libc.so.6" in static
    assert not any("stdc++" in n for n in static)
    assert _elf_check.private_libstdcxx_problem(shared_objects["dynamic"]) is None
    problem = _elf_check.private_libstdcxx_problem(shared_objects["static"])
    assert problem.startswith(f"{shared_objects['static']} has no libstdc++.so among its ELF NEEDED entries (")
    # the built extension itself needs the shared one
    assert _elf_check.private_libstdcxx_problem(importlib.util.find_spec("detection._C").origin) is None


@needs_gxx
def test_files_that_are_not_elf_objects(shared_objects, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a shared object\n" * 10)
    with pytest.raises(_elf_check.NotELFError, match="is not an ELF file"):
        _elf_check.needed_libraries(str(text))
    assert _elf_check.private_libstdcxx_problem(str(text)) is None  # another platform's format: nothing to check
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(open(shared_objects["dynamic"], "rb").read()[:200])
    with pytest.raises(_elf_check.NotELFError, match="truncated or malformed"):
        _elf_check.needed_libraries(str(truncated))


@needs_gxx
def test_detection_ops_refuses_a_module_with_a_private_libstdcxx(shared_objects, tmp_path):
    _backend.refuse_private_libstdcxx(shared_objects["dynamic"])  # no error
    with pytest.raises(ImportError) as info:
        _backend.refuse_private_libstdcxx(shared_objects["static"])
    message = str(info.value)
    assert shared_objects["static"] in message and "refusing to load it" in message
    assert 'CC=/usr/bin/gcc CXX=/usr/bin/g++ LDSHARED="/usr/bin/g++ -shared" python setup.py build_ext' in message
    # wired into the import: a package whose _C is such a module stops at `import detection.ops`, before loading it
    package = tmp_path / "pkg" / "detection"
    package.mkdir(parents=True)
    for name in ("__init__.py",):
        (package / name).write_text("")
    ops = package / "ops"
    ops.mkdir()
    (ops / "__init__.py").write_text("from detection.ops import _backend  # noqa: F401\n")
    for name in ("_backend.py", "_elf_check.py"):
        (ops / name).write_text(open(os.path.join(ROOT, "detection", "ops", name)).read())
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / f"_C{suffix}").write_bytes(open(shared_objects["static"], "rb").read())
    proc = subprocess.run([sys.executable, "-c", "import detection.ops"], cwd=str(tmp_path / "pkg"),
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"ImportError: {package / ('_C' + suffix)} has no "
                                                           f"libstdc++.so among its ELF NEEDED entries")


def _load_setup():
    spec = importlib.util.spec_from_file_location("detection_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no setup() call: that runs only as __main__
    return module


def _build_tiny_extension(setup_module, folder):
    """Builds tests' C++ source as extension `tiny` in `folder` with setup.py's link check; returns its path."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    (folder / "tiny.cpp").write_text(SOURCE)
    dist = Distribution({"name": "tiny", "script_name": "setup.py",
                         "ext_modules": [Extension("tiny", ["tiny.cpp"], language="c++")]})
    command = setup_module.link_checked(build_ext)(dist)
    command.inplace = True
    command.ensure_finalized()
    command.run()
    return str(folder / f"tiny{importlib.machinery.EXTENSION_SUFFIXES[0]}")


@needs_gxx
def test_setup_relinks_a_static_libstdcxx_with_the_system_compiler(tmp_path, monkeypatch, capsys):
    setup_module = _load_setup()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LDFLAGS", "-static-libstdc++")  # the reproduction
    monkeypatch.setenv("CXX", "g++")
    path = _build_tiny_extension(setup_module, tmp_path)
    assert any(n.startswith("libstdc++.so") for n in _elf_check.needed_libraries(path))
    out = capsys.readouterr().out
    assert "has no libstdc++.so among its ELF NEEDED entries" in out and f"relinking with {GXX}" in out
    assert os.environ["LDFLAGS"] == "-static-libstdc++"  # the environment is restored
    assert _elf_check.without_static_libstdcxx("-O2 -static-libstdc++ -Wl,-z,now -static") == "-O2 -Wl,-z,now"
    assert _elf_check.system_toolchain_environment({"LDFLAGS": "-static-libstdc++ -L/x", "PATH": "/bin"}) == {
        "CC": "/usr/bin/gcc", "CXX": GXX, "LDSHARED": f"{GXX} -shared", "LDCXXSHARED": f"{GXX} -shared",
        "LDFLAGS": "-L/x"}


@needs_gxx
def test_setup_fails_with_one_line_when_relinking_is_impossible(tmp_path, monkeypatch):
    from setuptools.errors import LinkError

    setup_module = _load_setup()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LDFLAGS", "-static-libstdc++")
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr(setup_module.elf, "SYSTEM_CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(LinkError) as info:
        _build_tiny_extension(setup_module, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("g++ linked libstdc++ statically into ")
    assert message.endswith(f"does not exist: build with {_elf_check.FIX}")


@pytest.mark.parametrize("call, message", [
    (lambda x, r: torch.ops.detection.roi_pool(x, r, 1.0, 0, 3), "roi_pool: output size must be positive, got (0, 3)"),
    (lambda x, r: torch.ops.detection.roi_align(x, r, -0.5, 2, 2, 0, False),
     "roi_align: spatial_scale must be a positive finite number, got -0.5"),
    (lambda x, r: torch.ops.detection.roi_align(x, r + torch.tensor([3.0, 0, 0, 0, 0]), 1.0, 2, 2, 0, False),
     "roi_align: rois[0, 0] = 3 is not a batch index in [0, 1)"),
    (lambda x, r: torch.ops.detection.nms(torch.rand(3, 4), torch.rand(2), 0.5),
     "nms: boxes and scores must have the same length, got 3 and 2"),
], ids=["roi_pool_size", "roi_align_scale", "roi_align_batch_index", "nms_lengths"])
def test_compiled_error_messages_keep_their_numbers(call, message):
    """A private libstdc++ cut these at the first number ("... got ("): the whole first line must arrive."""
    x, rois = torch.rand(1, 2, 5, 5), torch.tensor([[0, 0, 0, 3, 3.0]])
    with pytest.raises(RuntimeError) as info:
        call(x, rois)
    assert str(info.value).splitlines()[0] == message
