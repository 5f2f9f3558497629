"""Checkpoints: atomic writes, a `last_checkpoint` pointer, exact resume, safe loading.

A checkpoint is a dict of plain containers and tensors only (so `torch.load(..., weights_only=True)` reads it):
`model`, `optimizer`, `scheduler` state dicts, `iteration` (number of finished iterations), `rng` (torch, CUDA,
numpy and Python random states as tensors / lists), `config` (the resolved config as a YAML string), `extra`
(plain values: class names, the best evaluation so far, ...; `Checkpointer.extra` is saved and restored).
"""
import json
import logging
import os
import random
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write a small text file atomically (temporary file + rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def get_rng_states() -> Dict[str, Any]:
    """Every RNG the training loop touches, as weights_only-loadable values."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


class Checkpointer:
    """Saves and restores the training state in `output_dir` (rank 0 saves; every rank loads)."""

    def __init__(self, model, optimizer=None, scheduler=None, output_dir: str = ".", save_to_disk: bool = True,
                 config_text: str = "", extra: Optional[Dict[str, Any]] = None):
        self.model = model
        self.extra: Dict[str, Any] = dict(extra or {})
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.output_dir = output_dir
        self.save_to_disk = save_to_disk
        self.config_text = config_text

    def save(self, name: str, iteration: int, extra: Optional[Dict[str, Any]] = None, tag_last: bool = True) -> str:
        """Write `<output_dir>/<name>.pth` atomically and point `last_checkpoint` at it (when tag_last)."""
        path = os.path.join(self.output_dir, f"{name}.pth")
        if not self.save_to_disk:
            return path
        state = {
            "model": unwrap_model(self.model).state_dict(),
            "iteration": int(iteration),
            "rng": get_rng_states(),
            "config": self.config_text,
            "extra": {**self.extra, **(extra or {})},
        }
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        atomic_torch_save(state, path)
        if tag_last:
            atomic_write_text(os.path.join(self.output_dir, LAST_CHECKPOINT), os.path.basename(path) + "\n")
        logger.info("saved checkpoint %s (iteration %d)", path, iteration)
        return path

    def last_checkpoint(self) -> Optional[str]:
        """The path `last_checkpoint` points to, or None when there is no pointer."""
        return read_last_checkpoint(self.output_dir)

    def resume(self) -> int:
        """Restore the full training state from `last_checkpoint`; returns the iteration to start from (0 if none)."""
        path = self.last_checkpoint()
        if path is None:
            logger.info("no checkpoint in %s: starting from scratch", self.output_dir)
            return 0
        state = load_checkpoint_file(path)
        unwrap_model(self.model).load_state_dict(state["model"])
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            set_rng_states(state["rng"])
        self.extra.update(state.get("extra") or {})
        logger.info("resumed from %s at iteration %d", path, state["iteration"])
        return int(state["iteration"])


def read_last_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint path `<output_dir>/last_checkpoint` names; None without a pointer; FileNotFoundError when
    the pointer names a missing file."""
    pointer = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        path = os.path.join(output_dir, f.read().strip())
    if not os.path.exists(path):
        raise FileNotFoundError(f"{pointer} points to {path}, which does not exist")
    return path


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc


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


def write_json(path: str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
