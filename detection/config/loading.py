"""Loading, merging, validating and dumping configs over the defaults of detection/config/defaults.py.

Strictness: an unknown key raises ``ConfigError`` naming the key, the file and the closest valid keys; a value
of the wrong type, outside the key's range or choices, or an empty list where one is needed raises
``ConfigError`` naming the key, the file, what is allowed and the value. Ints are accepted for floats, lists for
tuples (and the other way round), ``None`` only where the default is ``None``; for a key whose choices include
'true' and 'false' (TEST.VOC_07_METRIC), a bool is read as that choice. Relations between keys
(``_check_relations``) are checked once the whole config is merged.
"""
from __future__ import annotations

import ast
import difflib
import json
import math
import os
import re
from typing import Mapping, Optional, Sequence

from easydict import EasyDict

from detection.config import defaults as _defaults  # noqa: F401  (defines every key)
from detection.config.spec import DEFAULTS as _C
from detection.config.spec import SPECS as _SPECS
from detection.config.spec import ConfigError, describe_allowed, describe_range

#: top-level section of a dumped config holding what was resolved at run time (see dump_config)
RESOLVED_KEY = "_RESOLVED_"


def _to_plain(x):
    """EasyDict/dict -> dict, tuple -> list, recursively (what YAML can hold)."""
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _copy(x):
    if isinstance(x, dict):
        return EasyDict({k: _copy(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return type(x)(_copy(v) for v in x)
    return x


def get_default_config() -> EasyDict:
    """A deep copy of every key's default."""
    return _copy(_C)


def config_keys() -> list:
    """Every key as a KeySpec(key, default, comment, choices, pattern), in definition order."""
    return list(_SPECS.values())


def _suggest(dotted: str) -> list:
    """Closest valid keys: by leaf name in the same section, by full dotted name, same leaf elsewhere."""
    *parents, leaf = dotted.split(".")
    section = ".".join(parents)
    keys = list(_SPECS)
    out = []
    same_section = {k.split(".")[-1]: k for k in keys if ".".join(k.split(".")[:-1]) == section}
    out += [same_section[m] for m in difflib.get_close_matches(leaf, list(same_section), n=3, cutoff=0.6)]
    out += difflib.get_close_matches(dotted, keys, n=3, cutoff=0.6)
    out += [k for k in keys if k.split(".")[-1] == leaf]
    # also a section name that is itself close (e.g. "TRIAN" -> "TRAIN.*")
    seen, result = set(), []
    for k in out:
        if k not in seen:
            seen.add(k)
            result.append(k)
    return result[:5]


def _type_name(default) -> str:
    if default is None:
        return "any"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (list, tuple)):
        elem = _elem_type(default)
        return f"list of {elem.__name__}" if elem else "list"
    if isinstance(default, float):
        return "float (or int)"
    return type(default).__name__


def _elem_type(seq):
    types = {float if type(v) is int and any(type(w) is float for w in seq) else type(v) for v in seq}
    if len(types) == 1:
        return types.pop()
    return None


def _coerce_scalar(value, default, where):
    """Check one scalar against the default's type; return the (possibly converted) value or raise."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    else:
        if isinstance(value, type(default)):
            return value
    raise where(f"expected {_type_name(default)}, got {value!r} ({type(value).__name__})")


def _bool_choice(spec, value):
    """A bool (YAML true, --set True) for a key with choices 'true'/'false' -> that choice's string."""
    if spec is None or not spec.choices or not {"true", "false"} <= set(spec.choices):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower()
    return value


def _check_range(spec, value, where):
    """Raise unless every number in `value` (a number or a list) is in the key's range and a list's size fits."""
    if spec is None:
        return
    if isinstance(value, (list, tuple)):
        if spec.length is not None and len(value) != spec.length:
            raise where(f"expected {describe_allowed(spec)}, got {list(value)!r} ({len(value)} entries)")
        if spec.nonempty and not value:
            raise where(f"expected {describe_allowed(spec)}, got []")
        values = value
    else:
        values = [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if spec.finite and not math.isfinite(v):
            shown = list(value) if isinstance(value, (list, tuple)) else value
            raise where(f"expected {'finite numbers' if isinstance(value, (list, tuple)) else 'a finite number'}, got "
                        f"{shown!r}")
        bad = ((spec.min is not None and not v >= spec.min) or (spec.max is not None and not v <= spec.max)
               or (spec.above is not None and not v > spec.above))
        if bad:
            shown = list(value) if isinstance(value, (list, tuple)) else value
            what = describe_allowed(spec) if isinstance(value, (list, tuple)) else describe_range(spec)
            raise where(f"expected {what}, got {shown!r}")


def _list_quoting_hint(key: str, text: str, default, source: str) -> str:
    """How to write the list of names that `text` (a string given for a list key) meant, e.g. for
    '[circle, square]' from --set: "...: --set DATA.CLASSES '["circle", "square"]'"; '' for lists of numbers."""
    if _elem_type(default) in (int, float):
        return ""
    inner = text.strip()
    if inner[:1] in "[(":
        inner = inner[1:-1] if inner[-1:] in "])" else inner[1:]
    items = [t.strip().strip("'\"") for t in inner.split(",") if t.strip().strip("'\"")]
    if not items:
        return ""
    example = "[" + ", ".join(json.dumps(t) for t in items) + "]"
    if source.startswith("--set"):
        return (f"; on the command line a list is a Python literal with quoted names, the whole value quoted for "
                f"the shell: --set {key} '{example}'")
    return f"; write a list, e.g. {key.split('.')[-1]}: {example}"


def _check_value(key: str, value, default, source: str):
    def where(msg):
        return ConfigError(f"config key {key} in {source}: {msg}")

    if default is None:
        return value
    spec = _SPECS.get(key)
    value = _bool_choice(spec, value)
    if value is None:
        raise where(f"expected {_type_name(default)}, got None (None is allowed only where the default is None)")
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            hint = _list_quoting_hint(key, value, default, source) if isinstance(value, str) else ""
            raise where(f"expected {_type_name(default)}, got {value!r} ({type(value).__name__}){hint}")
        elem = _elem_type(default)
        if elem is not None:
            proto = elem()
            try:
                value = [_coerce_scalar(v, proto, where) for v in value]
            except ConfigError as e:
                raise where(f"expected {_type_name(default)}, got {value!r}") from e
        _check_range(spec, value, where)
        return type(default)(value)
    value = _coerce_scalar(value, default, where)
    _check_range(spec, value, where)
    if spec is not None and spec.choices is not None and value not in spec.choices:
        raise where(f"expected one of {list(spec.choices)}, got {value!r}")
    if spec is not None and spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise where(f"expected a value matching {spec.pattern!r}, got {value!r}")
    return value


def _unknown(key: str, source: str) -> ConfigError:
    sugg = _suggest(key)
    hint = f"; did you mean {', '.join(sugg)}?" if sugg else ""
    return ConfigError(f"unknown config key {key} in {source}{hint} (all keys: docs/config.md)")


def _set_key(cfg, dotted: str, value, source: str):
    """Set one dotted key (which must exist in the defaults) after checking the value's type."""
    node, default_node = cfg, _C
    *parents, leaf = dotted.split(".")
    for i, p in enumerate(parents):
        if not isinstance(default_node, dict) or p not in default_node:
            raise _unknown(dotted, source)
        if not isinstance(default_node[p], dict):
            raise _unknown(dotted, source)
        default_node, node = default_node[p], node[p]
    if leaf not in default_node:
        raise _unknown(dotted, source)
    default = default_node[leaf]
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {dotted} in {source}: is a section; expected a mapping, got {value!r}")
        for k, v in value.items():
            _set_key(cfg, f"{dotted}.{k}", v, source)
        return
    node[leaf] = _copy(_check_value(dotted, value, default, source))


def merge_from_dict(cfg: EasyDict, d: dict, source: str = "<dict>") -> EasyDict:
    """Merge a nested mapping (keys may also be dotted, "TRAIN.SCALES") into cfg, strictly; returns cfg."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
    for k, v in d.items():
        if not isinstance(k, str):
            raise ConfigError(f"config key {k!r} in {source}: keys must be strings")
        _set_key(cfg, k, v, source)
    return cfg


def _parse_override(key: str, raw):
    if not isinstance(raw, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw
    spec = _SPECS.get(key)
    if spec is not None and isinstance(spec.default, str) and not isinstance(value, str):
        return raw  # e.g. --set DATA.TEST_SET 2007 keeps the string "2007" (and "True" -> 'true' for choices)
    return value


def merge_from_list(cfg: EasyDict, overrides: Sequence, source: str = "--set") -> EasyDict:
    """Apply a flat [KEY, VALUE, KEY, VALUE, ...] list (values parsed with ast.literal_eval, else raw strings)."""
    overrides = list(overrides)
    if len(overrides) % 2:
        raise ConfigError(f"{source}: expected KEY VALUE pairs, got an odd number of items: {overrides}")
    for key, raw in zip(overrides[0::2], overrides[1::2]):
        _set_key(cfg, key, _parse_override(key, raw), source)
    return cfg


def _read_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge_file(cfg: EasyDict, path: str, stack: tuple) -> None:
    real = os.path.realpath(path)
    if real in stack:
        chain = " -> ".join(list(stack) + [real])
        raise ConfigError(f"_BASE_ cycle: {chain}")
    _merge_data(cfg, _read_yaml(path), path, os.path.dirname(path), stack + (real,))


def _merge_data(cfg: EasyDict, data: dict, source: str, base_dir: str, stack: tuple) -> None:
    """Merge one file's content (or a mapping given in Python): its _RESOLVED_ section, its _BASE_ files
    (relative to `base_dir`), then its keys."""
    data = dict(data)
    resolved = data.pop(RESOLVED_KEY, None)
    if resolved is not None:
        if not isinstance(resolved, dict):
            raise ConfigError(f"{RESOLVED_KEY} in {source}: expected a mapping, got {resolved!r}")
        cfg[RESOLVED_KEY] = _copy(resolved)
    bases = data.pop("_BASE_", None)
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f"_BASE_ in {source}: expected a path or a list of paths, got {bases!r}")
        for b in bases:
            bpath = b if os.path.isabs(b) else os.path.join(base_dir, b)
            if not os.path.exists(bpath):
                raise ConfigError(f"_BASE_ file {b!r} of {source} not found (looked at {bpath})")
            _merge_file(cfg, bpath, stack)
    merge_from_dict(cfg, data, source=source)


def load_config(path=None, overrides: Optional[Sequence] = None) -> EasyDict:
    """Defaults, then the YAML file at ``path`` (after its ``_BASE_`` files, recursively), then ``overrides``.

    path: a YAML file of overrides; ``_BASE_: other.yaml`` (or a list) inherits, relative to the including file.
        A mapping instead of a path is merged the same way (nested sections or dotted keys, ``_BASE_`` relative to
        the working directory), e.g. ``{"MODEL": {"BACKBONE": {"NAME": "resnet50"}}}``; a config that
        load_config returned is such a mapping too.
    overrides: flat list [KEY, VALUE, ...] as from ``--set``; values are ``ast.literal_eval``-ed when possible.
    Raises ConfigError on unknown keys, wrong types, bad choices, missing files or _BASE_ cycles.
    """
    cfg = get_default_config()
    source = "the defaults"
    if isinstance(path, Mapping):
        source = "the cfg mapping"
        _merge_data(cfg, _to_plain(path), source, os.getcwd(), ())
    elif path:
        source = os.fspath(path)
        _merge_file(cfg, source, ())
    if overrides:
        merge_from_list(cfg, overrides)
    _check_relations(cfg, " and ".join(([source] if path else []) + (["--set"] if overrides else []))
                     or "the defaults")
    return cfg


# (low key, high key): cfg[low] <= cfg[high] must hold (IoU bands of the samplers, the crop's area range)
_ORDERED = (
    ("TRAIN.BG_THRESH_LO", "TRAIN.BG_THRESH_HI"),
    ("TRAIN.BG_THRESH_HI", "TRAIN.FG_THRESH"),
    ("TRAIN.RPN_NEGATIVE_OVERLAP", "TRAIN.RPN_POSITIVE_OVERLAP"),
)


def _get(cfg, dotted: str):
    node = cfg
    for p in dotted.split("."):
        node = node[p]
    return node


def _check_relations(cfg: EasyDict, source: str) -> None:
    """Relations between keys that no single key's range can say; ConfigError naming both keys and values."""
    for lo, hi in _ORDERED:
        a, b = _get(cfg, lo), _get(cfg, hi)
        if a > b:
            raise ConfigError(f"config keys {lo} = {a!r} and {hi} = {b!r} in {source}: {lo} must be <= {hi}")
    crop = list(cfg.AUG.RANDOM_CROP_SCALE)
    if crop[0] > crop[1]:
        raise ConfigError(f"config key AUG.RANDOM_CROP_SCALE in {source}: expected (low, high) with low <= high, "
                          f"got {crop!r}")


def dump_config(cfg: EasyDict, resolved: Optional[dict] = None) -> str:
    """The whole config as YAML (tuples as lists); ``load_config`` of it gives an identical config.

    resolved: values found at run time rather than written by the user (e.g. ``{"CLASSES": [...]}`` read from a
    COCO JSON while DATA.CLASSES is []), written as a separate ``_RESOLVED_`` section after a comment, so the
    file shows both what was configured and what was resolved; ``load_config`` carries the section along as
    ``cfg._RESOLVED_`` without treating it as keys."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    plain = _to_plain(cfg)
    section = {**plain.pop(RESOLVED_KEY, {}), **_to_plain(resolved or {})}
    text = yaml.dump(plain, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    if section:
        text += ("# Resolved at run time from the data (not configuration keys; DATA.CLASSES above is what was "
                 "written):\n")
        text += yaml.dump({RESOLVED_KEY: section}, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                          width=120)
    return text


def resolve_num_classes(cfg: EasyDict) -> int:
    """MODEL.NUM_CLASSES, or when 0: len(DATA.CLASSES) (+1 background for faster_rcnn)."""
    n = int(cfg.MODEL.NUM_CLASSES)
    if n > 0:
        return n
    k = len(cfg.DATA.CLASSES)
    if k == 0:
        raise ConfigError("MODEL.NUM_CLASSES is 0 and DATA.CLASSES is empty: take the classes from the dataset "
                          "first (set DATA.CLASSES) or set MODEL.NUM_CLASSES")
    return k + 1 if cfg.MODEL.META_ARCHITECTURE == "faster_rcnn" else k


def _self_check():
    for key, spec in _SPECS.items():
        _check_value(key, spec.default, spec.default, "detection/config/defaults.py")


_self_check()
