"""The key registry: `define_key` records one key's default, comment and allowed values into the defaults tree.

    define_key("TRAIN.SCALES", (600,), "Shortest-side sizes ...")   # used by detection/config/defaults.py only
    DEFAULTS: EasyDict of every default; SPECS: dotted key -> KeySpec, in definition order.

Imports nothing of the toolkit (the loading machinery and the key table both import this module).
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple, Optional, Sequence

from easydict import EasyDict

__all__ = ["ConfigError", "KeySpec", "DEFAULTS", "SPECS", "define_key"]


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type, a bad choice, a missing or cyclic _BASE_ file."""


class KeySpec(NamedTuple):
    key: str  # dotted name, e.g. "TRAIN.SCALES"
    default: Any
    comment: str
    choices: Optional[tuple]  # allowed values, or None
    pattern: Optional[str]  # regex a string value must fully match, or None


DEFAULTS = EasyDict()
SPECS: dict = {}  # dotted key -> KeySpec, in definition order


def define_key(key: str, default: Any, comment: str, choices: Optional[Sequence] = None,
               pattern: Optional[str] = None) -> None:
    """Define one key: its default, a one-line comment and optionally the allowed values."""
    if key in SPECS:
        raise RuntimeError(f"config key {key} defined twice")
    node = DEFAULTS
    *parents, leaf = key.split(".")
    for p in parents:
        if p not in node:
            node[p] = EasyDict()
        node = node[p]
    node[leaf] = copy.deepcopy(default)
    SPECS[key] = KeySpec(key, copy.deepcopy(default), comment, tuple(choices) if choices else None, pattern)
