"""Exponential moving average of a model's weights (SOLVER.EMA), the model that is evaluated and saved.

    ema = build_ema(cfg, model)        # None unless SOLVER.EMA.ENABLED; model: the unwrapped training model
    ema.update(model)                  # after every optimizer step
    ema.module                         # the averaged model (eval mode, no gradients): evaluate and save this
    ema.state_dict() / load_state_dict(...)  # {"updates": n} beside the averaged weights (checkpoint.py)

Update n (1, 2, ...) with decay d_n = DECAY * (1 - exp(-n / TAU)) (TAU 0: d_n = DECAY), for every entry of the
model's state dict:
    floating point (parameters, frozen or not, and buffers: BatchNorm running mean / var, FrozenBatchNorm's
    statistics):   ema = d_n * ema + (1 - d_n) * current     (computed as ema.lerp_(current, 1 - d_n))
    integer (BatchNorm's num_batches_tracked):   copied.
This is what the references do: YOLOv5's and timm's ModelEmaV2 average every floating-point state-dict entry
(parameters and buffers alike), d2go's EMAState includes the buffers and the frozen parameters by default (its
note: averaging the BatchNorm statistics too gains accuracy, EfficientNet-B3 79.87% -> 80.61%). `lerp_` leaves an
entry that does not change (frozen weights, FrozenBatchNorm2d) exactly as it is: ema + w * (x - ema) = ema when
x == ema. The YOLOv5 ramp keeps the first, far-from-trained weights from dominating a long memory.

Every process keeps its own EMA of its own replica: DDP keeps the replicas (and, with broadcast_buffers, their
BatchNorm buffers) identical, so the averages are identical too and nothing is communicated - provided they start
from the same weights: train_net restarts a new run's average after DDP has broadcast rank 0's initial weights
(each rank initialises its model from its own seed), and train_net's end-of-run check compares the averages too.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any, Dict, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["ModelEMA", "build_ema"]


class ModelEMA:
    """The averaged copy of `model` (module docstring). decay in [0, 1]; tau >= 0 (0 = no warm-up)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0):
        if not 0.0 <= decay <= 1.0 or tau < 0:
            raise ValueError(f"EMA decay must be in [0, 1] and tau >= 0, got decay {decay}, tau {tau}")
        self.decay, self.tau = float(decay), float(tau)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def decay_at(self, update: int) -> float:
        """d_n of update n (1-based)."""
        if self.tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-update / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards `model`'s current state (the unwrapped training model)."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        current = model.state_dict()
        averaged, targets = [], []
        for name, ema in self.module.state_dict().items():
            value = current[name].detach()
            if ema.is_floating_point():
                averaged.append(ema)
                targets.append(value.to(ema.dtype))
            else:
                ema.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, targets, weight)

    def state_dict(self) -> Dict[str, Any]:
        """What a checkpoint needs besides the averaged weights (the `module`'s state dict)."""
        return {"updates": self.updates}

    def load_state_dict(self, weights: Dict[str, torch.Tensor], state: Optional[Dict[str, Any]] = None) -> None:
        """Restore the averaged weights and the update count (0 when `state` is None: a fresh average)."""
        self.module.load_state_dict(weights)
        self.updates = int((state or {}).get("updates", 0))

    def __repr__(self) -> str:
        return f"ModelEMA(decay={self.decay}, tau={self.tau}, updates={self.updates})"


def build_ema(cfg, model: nn.Module) -> Optional[ModelEMA]:
    """ModelEMA of SOLVER.EMA for `model` (unwrapped, on its device), or None when SOLVER.EMA.ENABLED is false."""
    e = cfg.SOLVER.EMA
    if not e.ENABLED:
        return None
    logger.info("weight EMA: decay %g, warm-up tau %g; the averaged model is evaluated and saved", e.DECAY, e.TAU)
    return ModelEMA(model, e.DECAY, e.TAU)
