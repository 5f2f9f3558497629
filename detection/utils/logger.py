"""One call sets up the toolkit's logging: the console (rank 0 only) and a log file per process.

Modules log with ``logging.getLogger(__name__)`` (``detection.engine.trainer`` ...); those loggers propagate to
the ``detection`` logger that ``setup_logger`` configures, so a tool calls it once at start-up.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

__all__ = ["setup_logger"]

_CONSOLE_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_FILE_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_MARK = "_detection_setup_logger"  # set on the handlers we add, so a second call replaces them


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "detection",
                 level: int = logging.INFO, filename: str = "log.txt") -> logging.Logger:
    """Configure and return ``logging.getLogger(name)``.

    output_dir: folder for the log file ``<output_dir>/<filename>`` (a path ending in .txt or .log is used as
        the file itself); None: no file. Rank 0 writes ``log.txt``, rank r > 0 ``log.txt.rank<r>``, so
        processes never interleave lines in one file.
    rank: the process's global rank; only rank 0 logs to the console (stdout).
    Calling it again (e.g. with another output_dir) replaces the handlers it added before instead of
    duplicating every line. The logger does not propagate to the root logger.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, _MARK, False):
            logger.removeHandler(h)
            h.close()

    def add(handler: logging.Handler) -> None:
        setattr(handler, _MARK, True)
        logger.addHandler(handler)

    if rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(level)
        console.setFormatter(logging.Formatter(_CONSOLE_FORMAT, datefmt="%m/%d %H:%M:%S"))
        add(console)
    if output_dir:
        output_dir = os.fspath(output_dir)
        if output_dir.endswith((".txt", ".log")):
            path = output_dir
        else:
            path = os.path.join(output_dir, filename)
        if rank > 0:
            path = f"{path}.rank{rank}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fh = logging.FileHandler(path, mode="a", encoding="utf-8")
        fh.setLevel(level)
        fh.setFormatter(logging.Formatter(_FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        add(fh)
    if not any(getattr(h, _MARK, False) for h in logger.handlers):
        # rank > 0 without a file: stay silent (without a handler, logging's last resort would print warnings)
        add(logging.NullHandler())
    return logger
