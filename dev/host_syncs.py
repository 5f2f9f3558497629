"""Count, on any device, the calls that would make the host wait for a GPU: a CPU-side proxy for the host
synchronisations torch.profiler counts on CUDA (`cudaStreamSynchronize`).

    with HostSyncCounter() as counter:
        model(images)
    counter.total, counter.by_op, counter.by_place      # per op name / per (file, line) of the caller

On CUDA a host synchronisation happens wherever the host needs a value the GPU computes:
- a value read: `.item()`, `int()`, `bool()`, `float()` (aten::_local_scalar_dense), `torch.equal`;
- an op whose output size depends on the data: nonzero (also `torch.where(mask)`), boolean-mask indexing and
  assignment, masked_select, unique, unique_consecutive, bincount, repeat_interleave without output_size;
- a copy to the host: `.tolist()`, `.cpu()`, `.numpy()`;
- the NMS ops, ours and torchvision's, which read their result back (counted once a call; our CUDA batched_nms
  reads twice when its mask is stored compactly).
A TorchDispatchMode sees the ATen and custom ops; `Tensor.tolist`/`cpu`/`numpy` are wrapped for the copies. Reads
of CPU tensors that hold sizes computed from shapes on purpose (`detection.ops.shapes.host_values`) are not
counted: on a GPU they stay on the host. What it cannot see: a `.tolist()` of a tensor created on the CPU by a
factory call where the GPU code would create it on the device (none on the inference path).
"""
from __future__ import annotations

import collections
import os
import traceback
from typing import Counter, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from detection.ops.shapes import reading_host_values

__all__ = ["HostSyncCounter", "SYNCING_OPS"]

#: ops that make the host wait for the device on CUDA
SYNCING_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero", "aten::nonzero", "aten::masked_select",
    "aten::unique_consecutive", "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::bincount",
    "aten::repeat_interleave", "detection::nms", "detection::batched_nms", "detection::soft_nms",
    "torchvision::nms",
})
_COPIES = ("tolist", "cpu", "numpy")
_SOURCE_ROOTS = (os.sep + "detection" + os.sep, os.sep + "torchvision" + os.sep)


def _boolean_indices(indices) -> bool:
    return any(t is not None and t.dtype == torch.bool for t in indices)


def _caller() -> Tuple[str, int]:
    """(file, line) of the innermost frame in the toolkit or torchvision that led to the call."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if any(root in frame.filename for root in _SOURCE_ROOTS):
            return os.path.basename(frame.filename), frame.lineno
    return "?", 0


class HostSyncCounter(TorchDispatchMode):
    """Counts host synchronisations a CUDA run would make (module docstring); `total`, `by_op`, `by_place`."""

    def __init__(self):
        super().__init__()
        self.by_op: Counter = collections.Counter()
        self.by_place: Counter = collections.Counter()
        self._saved = {}

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def _record(self, name: str) -> None:
        if reading_host_values():
            return
        self.by_op[name] += 1
        self.by_place[(name,) + _caller()] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNCING_OPS:
            if not (name == "aten::repeat_interleave" and (kwargs or {}).get("output_size") is not None):
                self._record(name)
        elif name in ("aten::index", "aten::index_put", "aten::index_put_") and _boolean_indices(args[1]):
            self._record(f"{name} (boolean mask)")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for method in _COPIES:
            original = getattr(torch.Tensor, method)
            self._saved[method] = original

            def counted(tensor, *args, _original=original, _name=method, **kwargs):
                self._record(f"Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, method, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for method, original in self._saved.items():
            setattr(torch.Tensor, method, original)
        self._saved.clear()
        return super().__exit__(*exc)

    def report(self, limit: Optional[int] = None) -> str:
        """One line per (op, file, line), most frequent first."""
        rows = self.by_place.most_common(limit)
        return "\n".join(f"{n:3d}  {op}  {file}:{line}" for (op, file, line), n in rows)
