"""Sizes that stay sizes when a model is traced: the helpers for the points where a tensor's size meets Python.

Eager code sizes its tensors from Python ints (`int(...)`, `.tolist()`, resize factors as floats). A tracer would
freeze such numbers at the example's values: torch.jit.trace (the ONNX exporter) records them as constants, and
torch.export specialises on them or refuses a branch on them. The modules therefore branch locally wherever a size
would become a Python number (torchvision's `_get_shape_onnx` / `_get_top_n_idx` idea), with these helpers:

    tracing()            True under torch.jit.trace, torch.export and torch.compile
    shape(x, dims)       x.shape[d] for d in dims as an int64 [len(dims)] tensor on the CPU
    top_n(x, cap, dim)   min(cap, x.shape[dim]) as a size argument (topk's k, a slice end)
    as_size(t, least)    a 0-d int64 tensor as an argument of ops that take ints (interpolate, pad, arange)
    host_values(t)       the values of a CPU tensor of sizes computed from shapes, as Python numbers (eager code)

Under torch.jit.trace sizes flow as 0-d tensors (the graph's Shape / Gather); under torch.export they are
symbolic integers, unbacked where they come from data (`as_size` calls `.item()`), so no size is specialised to
the example; eagerly they are plain ints.
"""
from __future__ import annotations

import threading
from typing import List, Sequence, Union

import torch
from torch import Tensor

__all__ = ["tracing", "shape", "top_n", "as_size", "host_values", "reading_host_values"]

_HOST = threading.local()

Size = Union[int, Tensor, "torch.SymInt"]


def tracing() -> bool:
    """True while torch.jit.trace, torch.export or torch.compile records the code (sizes must stay symbolic)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def shape(x: Tensor, dims: Sequence[int]) -> Tensor:
    """x.shape[d] for d in dims: int64 [len(dims)] (the graph's Shape under the tracer, symbolic under
    torch.export, constants eagerly)."""
    if torch.jit.is_tracing():
        return torch._shape_as_tensor(x)[list(dims)]
    if torch.compiler.is_compiling():
        return torch.stack([torch.scalar_tensor(x.shape[d], dtype=torch.int64) for d in dims])
    return torch.tensor([x.shape[d] for d in dims], dtype=torch.int64)


def top_n(x: Tensor, cap: int, dim: int = 0) -> Size:
    """min(cap, x.shape[dim]): an int eagerly, a 0-d tensor under the tracer, a symbolic int under torch.export."""
    if torch.jit.is_tracing():
        return torch.clamp(torch._shape_as_tensor(x)[dim], max=cap)
    if torch.compiler.is_compiling():
        return torch.sym_min(cap, x.shape[dim])
    return min(int(cap), x.shape[dim])


def as_size(t: Tensor, least: int = 0) -> Size:
    """A 0-d int64 tensor known to be >= least, as an argument of ops that take ints: the tensor itself under the
    tracer (the size stays dynamic in the graph), else `.item()` (under torch.export an unbacked symbolic int
    whose lower bound lets later checks pass)."""
    if torch.jit.is_tracing():
        return t
    v = t.item()
    if torch.compiler.is_compiling():
        torch._check(v >= least)
    return v


def reading_host_values() -> bool:
    """True inside host_values: what a host-synchronisation counter (dev/host_syncs.py) does not count."""
    return getattr(_HOST, "depth", 0) > 0


def host_values(t: Tensor) -> List:
    """`t.tolist()` for a tensor that lives on the CPU by design (sizes computed from shapes, e.g. the resize):
    reading it never waits for a GPU. Raises ValueError for a tensor on another device."""
    if t.device.type != "cpu":
        raise ValueError(f"host_values reads CPU tensors (sizes computed on the host), got one on {t.device}")
    _HOST.depth = getattr(_HOST, "depth", 0) + 1
    try:
        return t.tolist()
    finally:
        _HOST.depth -= 1
