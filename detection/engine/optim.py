"""Optimizer and per-iteration learning-rate schedule (linear warmup, then step or cosine decay)."""
import math
from typing import Iterable, List, Sequence

import torch


def build_optimizer(
    named_parameters: Iterable,
    name: str = "sgd",
    base_lr: float = 0.001,
    momentum: float = 0.9,
    weight_decay: float = 0.0005,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD with momentum (py-faster-rcnn) or Adam, over the trainable parameters only.

    Frozen parameters (requires_grad=False) are left out, so they get no optimizer state. Biases get
    `base_lr * bias_lr_factor` and `weight_decay_bias` (py-faster-rcnn: 2x lr, no decay).
    """
    weights, biases = [], []
    for param_name, p in named_parameters:
        if not p.requires_grad:
            continue
        (biases if param_name.endswith(".bias") else weights).append(p)
    if not weights and not biases:
        raise ValueError("the model has no trainable parameters (check MODEL.FREEZE_AT)")
    groups = [{"params": weights, "lr": base_lr, "weight_decay": weight_decay, "initial_lr": base_lr}]
    if biases:
        groups.append({"params": biases, "lr": base_lr * bias_lr_factor, "weight_decay": weight_decay_bias,
                       "initial_lr": base_lr * bias_lr_factor})
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=base_lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr)
    raise ValueError(f"SOLVER.OPTIMIZER={name!r} is not one of 'sgd', 'adam', 'adamw'")


class WarmupDecay:
    """lr multiplier at iteration `it`: linear warmup from `warmup_factor` over `warmup_iters`, then
    step decay (x gamma at each of `steps`) or cosine decay to 0 at `max_iter`."""

    def __init__(self, policy: str = "step", max_iter: int = 1000, steps: Sequence[int] = (), gamma: float = 0.1,
                 warmup_iters: int = 0, warmup_factor: float = 0.001):
        if policy not in ("step", "cosine", "constant"):
            raise ValueError(f"SOLVER.LR_POLICY={policy!r} is not one of 'step', 'cosine', 'constant'")
        if list(steps) != sorted(steps):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {list(steps)}")
        self.policy = policy
        self.max_iter = int(max_iter)
        self.steps: List[int] = [int(s) for s in steps]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, it: int) -> float:
        if self.policy == "step":
            factor = self.gamma ** sum(1 for s in self.steps if it >= s)
        elif self.policy == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * min(it, self.max_iter) / max(self.max_iter, 1)))
        else:
            factor = 1.0
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, **schedule_kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration with a `WarmupDecay` multiplier (its state is plain values)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupDecay(**schedule_kwargs))
