"""Which config keys a resumed run may change, and the key-by-key differences between two configs.

A resumed run must be the run its checkpoint belongs to. Keys that change what is trained - the model, the
training data and its order, the augmentation, the optimizer and its schedule, the seed - are refused on
`train_net.py --resume` unless named in `--allow-changes` (the new values then take effect from the checkpoint's
iteration on). The keys below only say where and how often the run writes, how it is evaluated, how fast data is
loaded and on which device it runs; they may change and the change is logged. SOLVER.MAX_ITER may change too while
the schedule does not depend on it (LR_POLICY step or constant): the longer (or shorter) run is then exactly the
run that had that MAX_ITER from the start.
"""
from __future__ import annotations

import fnmatch
from typing import Any, List, Mapping, NamedTuple, Tuple

from detection.config.spec import SPECS

__all__ = ["MAY_CHANGE_ON_RESUME", "ConfigChange", "config_changes", "may_change_on_resume"]

#: keys (fnmatch patterns) a resumed run may change without --allow-changes
MAY_CHANGE_ON_RESUME = (
    "OUTPUT_DIR",
    "DEVICE",
    "TRAIN.SNAPSHOT_ITERS",
    "TRAIN.LOG_PERIOD",
    "TEST.*",
    "DATA.TEST_SET",
    "DATA.NUM_WORKERS",
    "CLS.CACHE_FEATURES",
    "CLS.ANALYSIS_IMAGES",
    "MODEL.BACKBONE.WEIGHTS",  # the initialisation of iteration 0; a resumed model comes from its checkpoint
)


class ConfigChange(NamedTuple):
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _lookup(tree: Mapping, dotted: str) -> Tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def config_changes(old: Mapping, new: Mapping) -> List[ConfigChange]:
    """The registered keys whose values differ between two configs (loaded configs or the plain dicts of their
    YAML dumps), in definition order; a key missing from `old` (a config written before the key existed) counts
    as its default."""
    changes = []
    for key, spec in SPECS.items():
        found, before = _lookup(old, key)
        before = _plain(before if found else spec.default)
        _, after = _lookup(new, key)
        after = _plain(after)
        if before != after:
            changes.append(ConfigChange(key, before, after))
    return changes


def may_change_on_resume(change: ConfigChange, old: Mapping, new: Mapping) -> bool:
    """Whether a resumed run may make `change` without --allow-changes (module docstring)."""
    if any(fnmatch.fnmatchcase(change.key, pattern) for pattern in MAY_CHANGE_ON_RESUME):
        return True
    if change.key == "SOLVER.MAX_ITER":
        policies = {_lookup(old, "SOLVER.LR_POLICY")[1], _lookup(new, "SOLVER.LR_POLICY")[1]}
        return "cosine" not in policies
    return False
