"""Checkpoints: saving (atomically, detection/utils/atomic_io.py), a `last_checkpoint` pointer, exact resume, safe
loading of checkpoints and weight files.

A checkpoint is a dict of plain containers and tensors only (so `torch.load(..., weights_only=True)` reads it):
`model`, `optimizer`, `scheduler` state dicts, `iteration` (number of finished iterations), `rng` (torch, CUDA,
numpy and Python random states as tensors / lists, of rank 0), `rng_per_rank` (multi-process runs: every rank's
`rng`, by rank; each rank restores its own), `config` (the resolved config as a YAML string), `extra` (plain
values: class names, the best evaluation so far, ...; `Checkpointer.extra` is saved and restored). With a weight
EMA (SOLVER.EMA, detection/engine/ema.py) `model` holds the averaged weights - what test_net, demo, export and
detection.load use - and `model_raw` the raw training weights, `ema` the average's update count; a resume restores
both.
"""
import logging
import os
from typing import Any, Dict, List, Optional

import torch

from detection.engine.distributed import get_rank, get_world_size, unwrap_model
from detection.utils.atomic_io import atomic_torch_save, atomic_write_text
from detection.utils.seed import get_rng_states, set_rng_states

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (unreadable, truncated, refused by weights_only, not a checkpoint, or of
    another model than the config builds); the message names the file. The tools exit with code 2."""


class Checkpointer:
    """Saves and restores the training state in `output_dir` (rank 0 saves; every rank loads)."""

    def __init__(self, model, optimizer=None, scheduler=None, output_dir: str = ".", save_to_disk: bool = True,
                 config_text: str = "", extra: Optional[Dict[str, Any]] = None, ema=None):
        self.model = model
        self.ema = ema  # a ModelEMA, or None
        self.extra: Dict[str, Any] = dict(extra or {})
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.output_dir = output_dir
        self.save_to_disk = save_to_disk
        self.config_text = config_text

    def save(self, name: str, iteration: int, extra: Optional[Dict[str, Any]] = None, tag_last: bool = True,
             rng_per_rank: Optional[List[Dict[str, Any]]] = None) -> str:
        """Write `<output_dir>/<name>.pth` atomically and point `last_checkpoint` at it (when tag_last).

        rng_per_rank: every process's `get_rng_states()` by rank (gathered by the caller on all ranks), so that a
        resumed multi-process run restores each rank's own streams."""
        path = os.path.join(self.output_dir, f"{name}.pth")
        if not self.save_to_disk:
            return path
        weights = unwrap_model(self.model).state_dict()
        state = {
            "model": weights if self.ema is None else self.ema.module.state_dict(),
            "iteration": int(iteration),
            "rng": get_rng_states(),
            "config": self.config_text,
            "extra": {**self.extra, **(extra or {})},
        }
        if self.ema is not None:
            state["model_raw"] = weights
            state["ema"] = self.ema.state_dict()
        if rng_per_rank is not None and len(rng_per_rank) > 1:
            state["rng_per_rank"] = list(rng_per_rank)
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        atomic_torch_save(state, path)
        if tag_last:
            atomic_write_text(os.path.join(self.output_dir, LAST_CHECKPOINT), os.path.basename(path) + "\n")
        logger.info("saved checkpoint %s (iteration %d)", path, iteration)
        return path

    def _restore_rng(self, state: Dict[str, Any], path: str) -> None:
        """This rank's RNG states from `rng_per_rank` (or `rng` in a one-process run). After a change of the
        number of processes only rank 0 gets its streams back (the others keep their seeding), with a warning."""
        rank, world = get_rank(), get_world_size()
        per_rank = state.get("rng_per_rank") or ([state["rng"]] if "rng" in state else [])
        if len(per_rank) == world:
            set_rng_states(per_rank[rank])
            return
        if per_rank and rank == 0:
            set_rng_states(per_rank[0])
        if per_rank:
            logger.warning("%s holds the RNG states of %d process(es), this run has %d: ranks other than 0 do not "
                           "continue their random streams, so the run differs from an uninterrupted one", path,
                           len(per_rank), world)

    def last_checkpoint(self) -> Optional[str]:
        """The path `last_checkpoint` points to, or None when there is no pointer."""
        return read_last_checkpoint(self.output_dir)

    def resume(self) -> int:
        """Restore the full training state from `last_checkpoint`; returns the iteration to start from (0 if none)."""
        path, state = self.load_last()
        return 0 if state is None else self.restore(state, path)

    def load_last(self):
        """`load_last_training_checkpoint(output_dir)`."""
        return load_last_training_checkpoint(self.output_dir)

    def restore(self, state: Dict[str, Any], path: str) -> int:
        """Load a training checkpoint's model, optimizer state, schedule position, RNG states and `extra`;
        returns its iteration.

        The hyperparameters (each parameter group's lr, momentum, weight decay; the schedule's base lrs, policy,
        steps, warm-up) stay the ones this run's optimizer and scheduler were built with from the config, the
        checkpoint gives the state (momentum buffers, Adam moments, the iteration): with an unchanged config
        they are the checkpoint's own, bit for bit; a change the caller allowed takes effect from here on.
        The raw weights come from `model_raw` when the checkpoint has an EMA; this run's EMA (if any) continues the
        checkpoint's average, or starts one from the raw weights."""
        model = unwrap_model(self.model)
        raw = state.get("model_raw", state["model"])
        problem = state_dict_mismatch(model, raw)
        if problem:
            changed = config_differences(state.get("config", ""), self.config_text)
            hint = f"; the config differs from the checkpoint's in {changed}" if changed else ""
            raise CheckpointError(f"cannot resume from {path}: it holds another model than the config builds "
                                  f"({problem}){hint}. Resume with the run's own config ({self.output_dir}/"
                                  f"config.yaml), or start a new run in another OUTPUT_DIR")
        try:
            model.load_state_dict(raw)
            if self.ema is not None:
                self._restore_ema(state, path)
            self._restore_optimization(state)
            self._restore_rng(state, path)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot resume from {path}: its optimizer, schedule or RNG state does not fit "
                                  f"this run ({first})") from exc
        self.extra.update(state.get("extra") or {})
        logger.info("resumed from %s at iteration %d", path, state["iteration"])
        return int(state["iteration"])

    def _restore_ema(self, state: Dict[str, Any], path: str) -> None:
        if "model_raw" in state:
            self.ema.load_state_dict(state["model"], state.get("ema"))
        else:
            self.ema.load_state_dict(state["model"])
            logger.info("%s holds no weight EMA: the average starts from its weights at iteration %d", path,
                        int(state["iteration"]))

    def _restore_optimization(self, state: Dict[str, Any]) -> None:
        """The optimizer's state and the scheduler's position from `state`, this run's hyperparameters kept."""
        built = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in self.optimizer.param_groups] \
            if self.optimizer is not None else []
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            for group, hyper in zip(self.optimizer.param_groups, built):
                group.update(hyper)
        if self.scheduler is not None and "scheduler" in state:
            own = self.scheduler.state_dict()
            saved = state["scheduler"]
            self.scheduler.load_state_dict({**own, "last_epoch": saved["last_epoch"],
                                            "_step_count": saved.get("_step_count", own.get("_step_count"))})
            lambdas = getattr(self.scheduler, "lr_lambdas", None)
            if lambdas is not None and self.optimizer is not None:  # LambdaLR: the lr of the next iteration
                lrs = [base * f(self.scheduler.last_epoch) for f, base in zip(lambdas, self.scheduler.base_lrs)]
                for group, lr in zip(self.optimizer.param_groups, lrs):
                    group["lr"] = lr
                self.scheduler._last_lr = lrs


def load_last_training_checkpoint(output_dir: str):
    """(path, state) of the checkpoint `<output_dir>/last_checkpoint` names, checked to be a training checkpoint,
    or (None, None) when there is none (a resume can then compare its config before `Checkpointer.restore`)."""
    path = read_last_checkpoint(output_dir)
    if path is None:
        logger.info("no checkpoint in %s: starting from scratch", output_dir)
        return None, None
    state = load_checkpoint_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or "iteration" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (a dict with 'model' and 'iteration', as "
                              f"tools/train_net.py writes): cannot resume from it")
    return path, state


def read_last_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint path `<output_dir>/last_checkpoint` names; None without a pointer; FileNotFoundError when
    the pointer names a missing file."""
    pointer = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.exists(pointer):
        return None
    try:
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {pointer}: {exc}") from None
    if not name:
        raise CheckpointError(f"{pointer} is empty: it should hold the file name of a checkpoint in {output_dir} "
                              f"(e.g. model_final.pth); write that name into it, or remove it to start afresh")
    path = os.path.join(output_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{pointer} points to {path}, which does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"{pointer} points to {path}, which is not a file")
    return path


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        if "Weights only load failed" in str(exc):
            reason = "it holds objects other than tensors and plain containers (refused by weights_only=True)"
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from exc


def state_dict_mismatch(model: torch.nn.Module, weights: Dict[str, Any]) -> str:
    """'' when `weights` fits `model` exactly (same keys, same shapes), else a short description of the
    differences (missing / unexpected keys, shape mismatches; a few of each)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in weights and torch.is_tensor(weights[k]) and weights[k].shape != own[k].shape]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)):
        if items:
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}")
    return "; ".join(parts)


def config_differences(saved: str, current: str, limit: int = 6) -> str:
    """'KEY: saved -> current, ...' for the config keys that differ between two YAML texts (MODEL.* first);
    '' when either cannot be read."""
    import yaml

    def flat(tree, prefix=""):
        out = {}
        for k, v in (tree or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    try:
        a, b = flat(yaml.safe_load(saved or "") or {}), flat(yaml.safe_load(current or "") or {})
    except (yaml.YAMLError, AttributeError):
        return ""
    keys = sorted((k for k in set(a) | set(b) if a.get(k) != b.get(k)), key=lambda k: (not k.startswith("MODEL."), k))
    keys = [k for k in keys if k != "OUTPUT_DIR"]
    shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys[:limit])
    return shown + (", ..." if len(keys) > limit else "")


def load_model_weights(model: torch.nn.Module, path: str, strict: bool = True,
                       skip_mismatched: bool = False) -> Dict[str, Any]:
    """Load model weights from a training checkpoint (`{'model': ...}`) or a bare state dict at `path`.

    Returns the checkpoint dict (so callers can read its `config` or `extra`). Shape mismatches and, when strict,
    missing/unexpected keys are errors that name the file and the keys. skip_mismatched (fine-tuning, e.g. to
    another number of classes): tensors whose shapes differ are left at the model's initialisation, with a
    warning naming them, and the keys that are then missing are not an error. A torchvision detector's state dict
    (fasterrcnn_resnet50_fpn / _v2) is recognised and its keys mapped (detection/modeling/torchvision_detectors.py).
    """
    from detection.modeling.torchvision_detectors import is_torchvision_detector_state, map_torchvision_detector_state

    state = load_checkpoint_file(path)
    weights = state["model"] if isinstance(state, dict) and "model" in state else state
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise CheckpointError(f"{path} holds a {type(weights).__name__}, not a checkpoint or a state dict "
                              f"(a dict of tensors)")
    model_state = unwrap_model(model).state_dict()
    if isinstance(weights, dict) and is_torchvision_detector_state(weights):
        weights = map_torchvision_detector_state(weights, model_state)
        logger.info("%s: a torchvision detector state dict (keys mapped)", path)
        state = {"model": weights}
    skipped = {k for k, v in weights.items() if k in model_state and v.shape != model_state[k].shape}
    mismatched = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(model_state[k].shape)}"
                  for k in sorted(skipped)]
    if mismatched and not skip_mismatched:
        raise ValueError(f"{path}: shape mismatch for " + "; ".join(mismatched[:10]))
    if mismatched:
        logger.warning("%s: %d tensors of another shape left at their initialisation: %s", path, len(mismatched),
                       "; ".join(mismatched))
        weights = {k: v for k, v in weights.items() if k not in skipped}
    result = unwrap_model(model).load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if strict and (missing or result.unexpected_keys):
        raise KeyError(f"{path}: missing keys {missing[:10]}, unexpected keys {result.unexpected_keys[:10]}")
    return state if isinstance(state, dict) else {"model": state}
