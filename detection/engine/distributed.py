"""Multi-process helpers for torchrun / DistributedDataParallel (nccl on GPUs, gloo on CPUs)."""
import os
from typing import Dict

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (torch.distributed.run), which sets RANK and WORLD_SIZE for every
    process, also for a single one."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "cpu") -> bool:
    """Join the process group that torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT).

    Returns True when running distributed. On CUDA each process uses GPU LOCAL_RANK with nccl; on CPU, gloo.
    A torchrun launch always joins, even with one process (torchvision's reference scripts do the same), so
    `torchrun --nproc_per_node 1` runs DistributedDataParallel over nccl on a single GPU.
    """
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    use_cuda = device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def synchronize() -> None:
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects); [obj] when not distributed."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_mean(values: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Average a dict of scalar tensors over all processes (for logging); identity when not distributed."""
    if not is_distributed() or get_world_size() == 1:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in keys])
    dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(keys, stacked))


def any_process(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on any process (so every rank takes the same branch)."""
    if not is_distributed() or get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def weights_match_rank0(model: torch.nn.Module) -> bool:
    """True on every process when its parameters and buffers equal rank 0's exactly (one broadcast of the
    flattened state); True when not distributed. A DDP run that diverged (e.g. a rank skipped a step) shows here."""
    if not is_distributed() or get_world_size() == 1:
        return True
    tensors = [t.detach() for t in model.state_dict().values() if t.is_floating_point()]
    flat = torch.cat([t.reshape(-1).double() for t in tensors]) if tensors else torch.zeros(1, dtype=torch.float64)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    same = torch.tensor([1.0 if torch.equal(flat, reference) else 0.0], device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item() == 1.0)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") else model
