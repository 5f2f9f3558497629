"""Files written whole or not at all: a temporary file beside the target, fsync, rename over it.

    atomic_torch_save(obj, "model_final.pth")     # torch.save
    atomic_write_text("last_checkpoint", "model_final.pth\n")
    write_json("metrics.json", {...})              # sorted keys, indented
    remove_stale_temporaries(folder)              # what a killed write left: <name>.XXXXXXXX.tmp

An I/O failure raises OutputWriteError with one line ("disk full while writing FILE", "cannot write FILE: reason");
the target keeps its old content and no temporary file is left. Whole folders: atomic_dir.py.
"""
import errno
import json
import logging
import os
import re
import tempfile
from typing import Any, List, Optional

import torch

logger = logging.getLogger(__name__)

__all__ = ["OutputWriteError", "describe_write_error", "atomic_torch_save", "atomic_write_text", "write_json",
           "remove_stale_temporaries"]

_TEMPORARY = re.compile(r".+\.[A-Za-z0-9_]{8}\.tmp")  # <name>.<mkstemp's 8 characters>.tmp


class OutputWriteError(OSError):
    """Writing an output failed: "disk full while writing FILE" or "cannot write FILE: reason". Exit code 2."""


def _os_error_in(exc: Optional[BaseException]) -> Optional[OSError]:
    """The first OSError with an errno in `exc`'s chain (torch buries the write's ENOSPC under a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_write_error(exc: BaseException, path: str) -> Optional[str]:
    """One line for a failed write of `path` ("disk full while writing PATH", "cannot write PATH: reason"), or
    None when `exc` is not an I/O failure (e.g. an object that cannot be pickled)."""
    err = _os_error_in(exc)
    if err is None:
        return None
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"disk full while writing {path}"
    return f"cannot write {path}: {err.strerror or err}"


def _atomic_write(path: str, write, mode: str) -> None:
    """`write(file)` into a temporary file beside `path`, fsync, rename over `path`; OutputWriteError on an I/O
    failure (the temporary file is removed, `path` keeps its old content)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        message = describe_write_error(exc, path if tmp is not None else folder)
        if message is None or not isinstance(exc, Exception):
            raise
        raise OutputWriteError(message) from exc


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    _atomic_write(path, lambda f: torch.save(obj, f), "wb")


def atomic_write_text(path: str, text: str) -> None:
    """Write a small text file atomically (temporary file + rename)."""
    _atomic_write(path, lambda f: f.write(text), "w")


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the `<name>.XXXXXXXX.tmp` files that interrupted atomic writes left in `folder`; returns their
    paths. Call it before a run writes there (two runs never share an OUTPUT_DIR)."""
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if _TEMPORARY.fullmatch(name) and os.path.isfile(path):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError as exc:
                logger.warning("cannot remove the stale temporary file %s: %s", path, exc)
    if removed:
        logger.info("removed %d temporary file(s) of interrupted writes: %s", len(removed),
                    ", ".join(os.path.basename(p) for p in removed))
    return removed


def write_json(path: str, data: Any) -> None:
    """`data` as indented JSON with sorted keys, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
