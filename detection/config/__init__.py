"""Configuration: every key's default with a comment (defaults.py), strict loading and merging (loading.py).

Public API::

    get_default_config() -> EasyDict                      # a deep copy of the defaults
    load_config(path=None, overrides=None) -> EasyDict    # defaults <- YAML file (with _BASE_) <- --set pairs
    merge_from_dict(cfg, d, source="<dict>") -> cfg       # strict, type-checked, in place
    merge_from_list(cfg, overrides, source="--set") -> cfg  # flat [KEY, VALUE, ...]
    dump_config(cfg) -> str                               # YAML; load_config() of it gives the same config
    config_keys() -> list[KeySpec]                        # (key, default, comment, choices) for docs/tools
    resolve_num_classes(cfg) -> int                       # MODEL.NUM_CLASSES, derived when 0

Owns: the key table and its validation. Must not import any other detection package (everything imports it).
Design rule: only ``build_*`` functions read a config; modules take plain arguments.
"""
from detection.config.defaults import VOC_CLASSES
from detection.config.loading import (config_keys, dump_config, get_default_config, load_config, merge_from_dict,
                                      merge_from_list, resolve_num_classes)
from detection.config.spec import DEFAULTS, ConfigError, KeySpec

__all__ = [
    "ConfigError",
    "KeySpec",
    "DEFAULTS",
    "get_default_config",
    "load_config",
    "merge_from_dict",
    "merge_from_list",
    "dump_config",
    "config_keys",
    "resolve_num_classes",
    "VOC_CLASSES",
]
