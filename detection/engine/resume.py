"""What `train_net.py --resume` checks before it continues a run: the config against the checkpoint's, key by key.

The config builds the run and the checkpoint gives its state (detectron2's split: model, optimizer moments,
iteration and RNG come from the checkpoint; every hyperparameter from the config). Keys that change what is
trained must equal the checkpoint's, or be named in --allow-changes; keys that may change
(detection/config/resume_rules.py) are logged. The changes made are written at the top of config.yaml as comments,
one line per resume, so that config.yaml says what ran and from which iteration.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Sequence

from detection.config.resume_rules import ConfigChange, config_changes, may_change_on_resume

logger = logging.getLogger(__name__)

_NOTE = "# resumed at iteration"


def check_resume(state: Dict[str, Any], path: str, cfg, class_names: Sequence[str],
                 allow_changes: Sequence[str] = ()) -> List[ConfigChange]:
    """The changes of `cfg` against the config saved in checkpoint `state` (read from `path`) that the resumed run
    makes; CheckpointError when SOLVER.MAX_ITER is below the checkpoint's iteration, or when keys that cannot
    change mid-run differ and are not all in `allow_changes`. The class names found in the data count as the key
    'classes' when they differ from the checkpoint's under an unchanged DATA.CLASSES."""
    import yaml

    from detection.config.loading import RESOLVED_KEY
    from detection.engine.checkpoint import CheckpointError

    iteration = int(state["iteration"])
    if int(cfg.SOLVER.MAX_ITER) < iteration:
        raise CheckpointError(f"cannot resume from {path}: SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER} is below its "
                              f"iteration {iteration}; set SOLVER.MAX_ITER >= {iteration} ({iteration} only "
                              f"evaluates), or start a new run in another OUTPUT_DIR")
    try:
        saved = yaml.safe_load(state.get("config") or "") or {}
    except yaml.YAMLError:
        saved = None
    if not isinstance(saved, dict) or not saved:
        logger.warning("%s holds no readable config: the resumed run's config cannot be compared with it", path)
        return []
    saved.pop(RESOLVED_KEY, None)
    changes = config_changes(saved, cfg)
    free = [c for c in changes if may_change_on_resume(c, saved, cfg)]
    fixed = [c for c in changes if c not in free]
    saved_names = list((state.get("extra") or {}).get("class_names") or [])
    if saved_names and saved_names != list(class_names) and all(c.key != "DATA.CLASSES" for c in changes):
        # the names found in the data (COCO categories, class folders) changed under an unchanged DATA.CLASSES
        fixed.append(ConfigChange("classes", saved_names, list(class_names)))
    allowed = set(allow_changes)
    refused = [c for c in fixed if c.key not in allowed]
    if refused:
        raise CheckpointError(
            f"cannot resume from {path} with a changed config: {'; '.join(str(c) for c in refused)} "
            f"({'this cannot' if len(refused) == 1 else 'these cannot'} change in the middle of a run). Resume with "
            f"the run's own config ({os.path.join(cfg.OUTPUT_DIR, 'config.yaml')}); pass --allow-changes "
            f"{' '.join(c.key for c in refused)} to continue with the new values from iteration {iteration}; or "
            f"start a new run in another OUTPUT_DIR (--weights {path} starts it from these weights)")
    unused = sorted(allowed - {c.key for c in fixed})
    if unused:
        logger.warning("--allow-changes %s: %s the same as in %s", " ".join(unused),
                       "is" if len(unused) == 1 else "are", path)
    for c in free:
        logger.info("resuming with %s (may change on resume)", c)
    for c in fixed:
        logger.warning("resuming with %s (allowed by --allow-changes; in effect from iteration %d)", c, iteration)
    return changes + [c for c in fixed if c not in changes]  # definition order, then 'classes'


def resume_note(saved_config_text: str, iteration: int, path: str, changes: Sequence[ConfigChange]) -> str:
    """config.yaml's comment lines: those of earlier resumes (kept from the checkpoint's config), plus one for
    this resume when it changes anything ("# resumed at iteration N from FILE with KEY: old -> new, ...")."""
    earlier = [line for line in (saved_config_text or "").splitlines() if line.startswith(_NOTE)]
    if changes:
        earlier.append(f"{_NOTE} {iteration} from {os.path.basename(path)} with "
                       + ", ".join(str(c) for c in changes))
    return "".join(line + "\n" for line in earlier)
