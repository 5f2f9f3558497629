"""Write a whole folder atomically: build it under ``<out>.tmp-<pid>``, rename it over ``<out>`` at the end.

    with atomic_directory("datasets/lfw_faces") as tmp:
        ...write files under tmp...
    # now datasets/lfw_faces is complete; after an exception nothing is left behind and <out> is untouched
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(out: str) -> Iterator[str]:
    """Yield an empty temporary folder beside `out`; on success it replaces `out` (an existing `out` is removed
    first, so callers decide beforehand whether replacing is allowed); on any exception it is deleted."""
    out = os.fspath(out).rstrip(os.sep)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
