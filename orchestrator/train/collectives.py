"""Every collective of the training runtime, on the device its process group serves.

Why one module: NCCL serves CUDA tensors only, so a small CPU tensor (a flag, a metric, a
directive) handed to ``all_reduce`` on an NCCL group raises on the first step on a GPU while
passing every CPU test over gloo. Here each call moves its tensor to the group's device and the
result back to where it came from, so callers never think about it. No other module of orch calls
``torch.distributed`` directly (``tests/unit/test_collectives.py`` checks the sources).

Which device a group serves follows ``torch.distributed.get_backend``: ``nccl`` -> the current CUDA
device; ``gloo`` or a mixed ``cpu:gloo,cuda:nccl`` group -> the tensor may stay where it is.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def collective_device(backend: str, tensor_device: torch.device, cuda_index: int | None) -> torch.device:
    """The device a tensor must be on for a collective over a group of ``backend``.

    A group that is NCCL only cannot take CPU tensors; one with a CPU backend (gloo, or a mixed
    ``cpu:gloo,cuda:nccl`` group) takes them as they are."""
    backend = backend.lower()
    cpu_capable = backend == "gloo" or "cpu:" in backend
    if tensor_device.type == "cpu" and not cpu_capable:
        if cuda_index is None:
            raise RuntimeError(f"a {backend} process group needs CUDA tensors but no CUDA device is set")
        return torch.device("cuda", cuda_index)
    return tensor_device


def _device_for(tensor: torch.Tensor, group) -> torch.device:
    cuda_index = torch.cuda.current_device() if torch.cuda.is_available() else None
    return collective_device(str(dist.get_backend(group)), tensor.device, cuda_index)


def initialise(backend: str | None = None) -> str:
    """Set up the default process group through DeepSpeed (which reads the launcher's environment):
    NCCL with a CPU-capable gloo side on CUDA machines, gloo elsewhere. Returns the backend used."""
    import deepspeed

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend)
    return backend


def is_initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank()


def backend() -> str:
    """The default process group's backend (``gloo``, ``nccl``, or ``cpu:gloo,cuda:nccl``)."""
    return str(dist.get_backend())


def world_size() -> int:
    return dist.get_world_size()


def group_rank(group) -> int:
    """This process's rank within ``group`` (its index in the group's own rank order)."""
    return dist.get_rank(group=group)


def group_ranks(group) -> list[int]:
    """Global ranks of a process group, sorted."""
    return sorted(dist.get_process_group_ranks(group))


def all_reduce(tensor: torch.Tensor, op: str = "sum", group=None) -> torch.Tensor:
    """Reduce ``tensor`` in place across ``group`` (on the group's device) and return it."""
    device = _device_for(tensor, group)
    work = tensor if tensor.device == device else tensor.to(device)
    dist.all_reduce(work, op=OPS[op], group=group)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def broadcast(tensor: torch.Tensor, src: int, group=None) -> torch.Tensor:
    """Give every rank ``src``'s ``tensor`` (in place) and return it."""
    device = _device_for(tensor, group)
    work = tensor if tensor.device == device else tensor.to(device)
    dist.broadcast(work, src=src, group=group)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def all_to_all_single(
    output: torch.Tensor,
    tensor: torch.Tensor,
    output_splits: list[int] | None = None,
    input_splits: list[int] | None = None,
    group=None,
) -> torch.Tensor:
    """Exchange rows of ``tensor`` across ``group`` into ``output`` (both on the group's device)."""
    device = _device_for(tensor, group)
    if tensor.device != device or output.device != device:
        work_in, work_out = tensor.to(device), output.new_empty(output.shape, device=device)
        dist.all_to_all_single(work_out, work_in.contiguous(), output_splits, input_splits, group=group)
        output.copy_(work_out)
        return output
    dist.all_to_all_single(output, tensor.contiguous(), output_splits, input_splits, group=group)
    return output


def all_ranks_agree(ok: bool, group=None) -> bool:
    """True only if every rank passes True (an all-reduce MIN of a flag)."""
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    return bool(all_reduce(flag, "min", group).item())


def reduce_max(value: float, group=None) -> float:
    return float(all_reduce(torch.tensor([value], dtype=torch.float64), "max", group).item())


def barrier() -> None:
    dist.barrier()


def shutdown() -> None:
    if is_initialised():
        dist.destroy_process_group()
