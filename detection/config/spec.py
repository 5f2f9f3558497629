"""The key registry: `define_key` records one key's default, comment and allowed values into the defaults tree.

    define_key("TRAIN.SCALES", (600,), "Shortest-side sizes ...", min=1, nonempty=True)   # defaults.py only

Allowed values: ``choices`` (a tuple), ``pattern`` (a regex for strings), and for numbers and lists of numbers
``min`` / ``max`` (inclusive) and ``above`` (exclusive lower bound), applied to every entry of a list;
``nonempty`` and ``length`` for lists; every number must be finite (no inf, no nan) unless ``finite=False``.
`describe_allowed` says them in words (error messages, docs/config.md).
    DEFAULTS: EasyDict of every default; SPECS: dotted key -> KeySpec, in definition order.

Imports nothing of the toolkit (the loading machinery and the key table both import this module).
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple, Optional, Sequence

from easydict import EasyDict

__all__ = ["ConfigError", "KeySpec", "DEFAULTS", "SPECS", "define_key", "describe_range", "describe_allowed"]


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type, a bad choice, a missing or cyclic _BASE_ file."""


class KeySpec(NamedTuple):
    key: str  # dotted name, e.g. "TRAIN.SCALES"
    default: Any
    comment: str
    choices: Optional[tuple]  # allowed values, or None
    pattern: Optional[str]  # regex a string value must fully match, or None
    min: Optional[float] = None  # numbers (each entry of a list): value >= min
    max: Optional[float] = None  # value <= max
    above: Optional[float] = None  # value > above
    nonempty: bool = False  # lists: at least one entry
    length: Optional[int] = None  # lists: exactly this many entries
    finite: bool = True  # numbers (each entry of a list): no inf, no nan


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe_range(spec: KeySpec) -> str:
    """The numeric range of a key in words ("in [0, 1]", ">= 1", "> 0"), or "" when it has none."""
    lo = None if spec.min is None else f">= {_num(spec.min)}"
    if spec.above is not None:
        lo = f"> {_num(spec.above)}"
    if spec.min is not None and spec.max is not None and spec.above is None:
        return f"in [{_num(spec.min)}, {_num(spec.max)}]"
    if spec.above is not None and spec.max is not None:
        return f"in ({_num(spec.above)}, {_num(spec.max)}]"
    if spec.max is not None:
        return f"<= {_num(spec.max)}"
    return lo or ""


def describe_allowed(spec: KeySpec) -> str:
    """Everything `define_key` restricts beyond the type, in words, e.g. "a non-empty list, each >= 1"."""
    parts = []
    if spec.length is not None:
        parts.append(f"a list of exactly {spec.length} entries")
    elif spec.nonempty:
        parts.append("a non-empty list")
    rng = describe_range(spec)
    if rng:
        parts.append(f"each {rng}" if isinstance(spec.default, (list, tuple)) else rng)
    return ", ".join(parts)


DEFAULTS = EasyDict()
SPECS: dict = {}  # dotted key -> KeySpec, in definition order


def define_key(key: str, default: Any, comment: str, choices: Optional[Sequence] = None,
               pattern: Optional[str] = None, *, min: Optional[float] = None, max: Optional[float] = None,
               above: Optional[float] = None, nonempty: bool = False, length: Optional[int] = None,
               finite: bool = True) -> None:
    """Define one key: its default, a one-line comment and optionally the allowed values (module docstring)."""
    if key in SPECS:
        raise RuntimeError(f"config key {key} defined twice")
    node = DEFAULTS
    *parents, leaf = key.split(".")
    for p in parents:
        if p not in node:
            node[p] = EasyDict()
        node = node[p]
    node[leaf] = copy.deepcopy(default)
    SPECS[key] = KeySpec(key, copy.deepcopy(default), comment, tuple(choices) if choices else None, pattern,
                         min, max, above, bool(nonempty), length, bool(finite))
