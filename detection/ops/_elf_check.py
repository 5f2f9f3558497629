"""Which shared libraries an ELF shared object needs, and whether it carries a private copy of libstdc++.

A C++ extension must share the process's libstdc++: one linked with `-static-libstdc++` (a compiler wrapper can add
it silently) has its own std::locale state, and formatting a number into an error message then crashes the whole
process (seen with `CC=/opt/gcc/bin/gcc` on a GPU image). Such a module has no `libstdc++.so.*` among its ELF
NEEDED entries. `setup.py` runs this check after linking (and relinks with the system compiler), and
`detection.ops` before loading `detection._C`.

Standard library only: setup.py loads this file by its path, before the package can be imported. The reader
follows the loader's view (program headers -> PT_DYNAMIC -> DT_NEEDED names in DT_STRTAB), so it also works on
stripped files without section headers.
"""
from __future__ import annotations

import struct
from typing import List, Optional

# The fix, as the environment of a build: the system compilers compile and link (LDSHARED replaces the wrapper).
SYSTEM_CXX = "/usr/bin/g++"
SYSTEM_TOOLCHAIN = {"CC": "/usr/bin/gcc", "CXX": SYSTEM_CXX, "LDSHARED": f"{SYSTEM_CXX} -shared"}
FIX = 'CC=/usr/bin/gcc CXX=/usr/bin/g++ LDSHARED="/usr/bin/g++ -shared"'

STATIC_LIBSTDCXX_FLAGS = ("-static-libstdc++", "-static")
FLAG_VARIABLES = ("LDFLAGS", "CFLAGS", "CXXFLAGS", "CPPFLAGS")  # distutils appends these to its link commands

# A C++ source that formats a number through std::ostream (the call that crashed with a private libstdc++), so the
# linker keeps libstdc++ among the NEEDED entries even where it drops unused libraries (--as-needed). Probes link it.
PROBE_SOURCE = r"""
#include <sstream>
#include <string>
extern "C" int describe(long n, char* out, int size) {
  std::ostringstream s;
  s << "got (" << n << ", 3)";
  const std::string r = s.str();
  int k = 0;
  for (; k + 1 < size && k < static_cast<int>(r.size()); ++k) out[k] = r[k];
  out[k] = 0;
  return k;
}
"""

_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


class NotELFError(ValueError):
    """The file is not an ELF object this reader understands (another format, or truncated)."""


def needed_libraries(path: str) -> List[str]:
    """The DT_NEEDED entries of the ELF file at `path`, in order (e.g. ['libc10.so', 'libstdc++.so.6', ...]).

    Raises NotELFError for a file that is not a readable 32- or 64-bit ELF object; [] when it has no dynamic
    section (a static executable).
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise NotELFError(f"{path} is not an ELF file")
    is64, end = data[4] == 2, "<" if data[5] == 1 else ">"
    try:
        header = struct.unpack_from(end + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH"), data, 16)
        phoff, phentsize, phnum = header[4], header[8], header[9]
        phdr = "IIQQQQQQ" if is64 else "IIIIIIII"
        segments = []  # (type, offset, vaddr, filesz)
        for i in range(phnum):
            v = struct.unpack_from(end + phdr, data, phoff + i * phentsize)
            segments.append((v[0], v[2], v[3], v[5]) if is64 else (v[0], v[1], v[2], v[4]))
        dynamic = [s for s in segments if s[0] == _PT_DYNAMIC]
        if not dynamic:
            return []
        _, dyn_off, _, dyn_size = dynamic[0]
        entry = "qQ" if is64 else "iI"
        step = struct.calcsize(entry)
        needed, strtab = [], None
        for pos in range(dyn_off, dyn_off + dyn_size - step + 1, step):
            tag, value = struct.unpack_from(end + entry, data, pos)
            if tag == _DT_NULL:
                break
            if tag == _DT_NEEDED:
                needed.append(value)
            elif tag == _DT_STRTAB:
                strtab = value
        if needed and strtab is None:
            raise NotELFError(f"{path}: NEEDED entries without a string table")
        base = _file_offset(segments, strtab) if needed else 0
        return [data[base + n:data.index(b"\0", base + n)].decode("utf-8", "replace") for n in needed]
    except (struct.error, ValueError) as exc:
        if isinstance(exc, NotELFError):
            raise
        raise NotELFError(f"{path}: truncated or malformed ELF file ({exc})") from exc


def _file_offset(segments, vaddr: int) -> int:
    """The file offset of virtual address `vaddr` (the PT_LOAD segment that maps it)."""
    for kind, offset, start, size in segments:
        if kind == _PT_LOAD and start <= vaddr < start + size:
            return vaddr - start + offset
    raise NotELFError(f"address {vaddr:#x} is in no loaded segment")


def links_shared_libstdcxx(needed: List[str]) -> bool:
    """True when `needed` (NEEDED entries) names the shared libstdc++ (libstdc++.so.6 on every current system)."""
    return any(name.startswith("libstdc++.so") for name in needed)


def private_libstdcxx_problem(path: str) -> Optional[str]:
    """None when the shared object at `path` needs the shared libstdc++ (or is no ELF file: another platform's
    format, nothing to check); otherwise one sentence saying what is wrong with it."""
    try:
        needed = needed_libraries(path)
    except NotELFError:
        return None
    if links_shared_libstdcxx(needed):
        return None
    return (f"{path} has no libstdc++.so among its ELF NEEDED entries ({', '.join(needed) or 'none'}): "
            f"libstdc++ was linked into it statically, and its private copy crashes the process when a C++ "
            f"error message formats a number")


def without_static_libstdcxx(flags: str) -> str:
    """Compiler / linker flags without the ones that link libstdc++ statically."""
    return " ".join(f for f in flags.split() if f not in STATIC_LIBSTDCXX_FLAGS)


def system_toolchain_environment(environ) -> dict:
    """The variables to set over `environ` (a mapping like os.environ) so that distutils compiles and links with
    the system compilers: CC, CXX, LDSHARED, LDCXXSHARED, and the flag variables without static-libstdc++ flags."""
    env = dict(SYSTEM_TOOLCHAIN, LDCXXSHARED=SYSTEM_TOOLCHAIN["LDSHARED"])
    env.update({k: without_static_libstdcxx(environ[k]) for k in FLAG_VARIABLES if k in environ})
    return env
