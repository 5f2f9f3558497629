"""Turn exceptions into the one-line messages the tools print.

torch's DataLoader re-raises a worker's exception in the main process as ``type(exc)(text)`` where `text` is
"Caught X in DataLoader worker process N.\\nOriginal Traceback ...": :func:`worker_message` recovers the original
message from that text, so a bad image read in a worker reads the same as one read in the main process.
"""
from __future__ import annotations

import re

__all__ = ["worker_message", "one_line"]

_CAUGHT = re.compile(r"^Caught (\w+) in (.*?)\.\nOriginal Traceback", re.DOTALL)


def worker_message(text: str) -> str:
    """The original exception message inside torch's worker re-raise `text`; `text` unchanged otherwise."""
    text = str(text)
    match = _CAUGHT.match(text)
    if match is None:
        return text
    name = match.group(1)
    lines = [line for line in text.splitlines() if line.strip()]
    for i in range(len(lines) - 1, 0, -1):  # the last "pkg.mod.Name: message" line is the raised one
        head, sep, rest = lines[i].partition(": ")
        if sep and (head == name or head.endswith("." + name)):
            return "\n".join([rest, *lines[i + 1:]])
    return lines[-1]


def one_line(exc: BaseException) -> str:
    """`str(exc)` without a DataLoader worker's traceback."""
    return worker_message(str(exc))
