"""Data errors that the CUDA RoI kernels find without a device sync (csrc/cuda/async_error.cuh).

The CPU kernels reject a RoI whose batch index is outside [0, B), a RoIAlign sampling grid beyond its bound and a
RoIPool argmax outside the map before computing. The CUDA kernels cannot look at the data without waiting for the
GPU: they leave such a RoI's output 0 (no gradient, nothing read or written outside the map) and record the first
error on the device. The next CUDA `nms` call raises it (the RuntimeError carries the CPU kernel's message), or
`check_async_errors()` does so at once.
"""
import torch

from detection.ops._backend import USE_TORCHVISION


def check_async_errors() -> None:
    """Synchronise the CUDA devices the ops have used and raise the first recorded data error, if any (clearing
    it). Nothing to do with DETECTION_OPS=torchvision, a CPU-only build or before any CUDA RoI op ran."""
    if USE_TORCHVISION:
        return
    torch.ops.detection._check_async_errors()
