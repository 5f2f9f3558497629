"""One writer per output folder: an exclusive `fcntl.flock` on OUTPUT_DIR/train.lock for a whole training run.

    lock = OutputDirLock(output_dir).acquire()   # ToolError "OUTPUT_DIR ... is in use by process N (started ...)"
    ...
    lock.release()                               # also dropped by the kernel when the process exits or is killed

The kernel holds the lock, not the file: a lock file left behind by a killed run never blocks the next one. The
file only tells a refused run who holds the folder (pid, host, start time, command line); the holder removes it on
release. `claim_output_dir` is what train_net calls (on rank 0 only: the processes of one torchrun run share one
folder and one lock); `release_claims` ends them (`launch.run_tool` releases those its tool made).
"""
from __future__ import annotations

import datetime
import errno
import logging
import os
import socket
import sys
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)

LOCK_NAME = "train.lock"

_CLAIMS: List["OutputDirLock"] = []


class OutputDirLock:
    """An exclusive, non-blocking flock on `<folder>/train.lock` (the folder must exist)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "OutputDirLock":
        """Take the lock or raise ToolError naming the process that holds it. A file system without flock
        support (some network mounts) gives a warning and no lock."""
        import fcntl

        from detection.engine.launch import ToolError

        for _ in range(20):  # the holder may remove the file between our open and our flock: open it again
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ToolError(self._in_use_message()) from None
                logger.warning("cannot lock %s (%s): a second run on this OUTPUT_DIR would not be noticed", self.path,
                               exc.strerror or exc)
                return self
            try:
                same_file = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        else:
            raise ToolError(f"cannot lock {self.path}: the file keeps being replaced")
        os.ftruncate(fd, 0)
        os.write(fd, _describe_this_process().encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it, so nobody can take a file about to vanish) and unlock."""
        if self._fd is None:
            return
        import fcntl

        try:
            os.unlink(self.path)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _in_use_message(self) -> str:
        info = _read_holder(self.path)
        if "pid" not in info:
            return (f"OUTPUT_DIR {self.folder} is in use by another process (it holds {self.path}); wait for that run "
                    f"to end, or choose another OUTPUT_DIR (--set OUTPUT_DIR ...)")
        host = info.get("host", "")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        command = info.get("command", "")
        return (f"OUTPUT_DIR {self.folder} is in use by process {info['pid']}{where} (started "
                f"{info.get('started', '?')}{': ' + command if command else ''}); wait for that run to end, or choose "
                f"another OUTPUT_DIR (--set OUTPUT_DIR ...)")


def _describe_this_process() -> str:
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    command = " ".join([os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])
    if len(command) > 200:
        command = command[:197] + "..."
    return f"pid: {os.getpid()}\nhost: {socket.gethostname()}\nstarted: {started}\ncommand: {command}\n"


def _read_holder(path: str) -> Dict[str, str]:
    """The `key: value` lines of a lock file ({} when unreadable or not yet written)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def claim_output_dir(output_dir: str, resume: bool) -> OutputDirLock:
    """Lock `output_dir` for a training run (released by `release_claims` or the process's end) and, without
    `resume`, refuse a folder that holds a run's checkpoint. ToolError / CheckpointError otherwise."""
    from detection.engine.checkpoint import read_last_checkpoint
    from detection.engine.launch import ToolError

    lock = OutputDirLock(output_dir).acquire()
    try:
        last = None if resume else read_last_checkpoint(output_dir)
    except Exception:
        lock.release()
        raise
    if last is not None:
        lock.release()
        raise ToolError(f"OUTPUT_DIR {output_dir} already holds a training run (last checkpoint {last}): pass "
                        f"--resume to continue it, or choose another OUTPUT_DIR (--set OUTPUT_DIR ...)")
    _CLAIMS.append(lock)
    return lock


def claims_held() -> int:
    """How many output folders this process holds (for `release_claims(keep=...)`)."""
    return len(_CLAIMS)


def release_claims(keep: int = 0) -> None:
    """Release the output folders this process claimed, the latest first, until `keep` remain."""
    while len(_CLAIMS) > keep:
        _CLAIMS.pop().release()
