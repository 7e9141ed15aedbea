"""Collectives: one module owns torch.distributed, and puts each tensor on its group's device."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from orchestrator.train import collectives
from orchestrator.train.collectives import collective_device

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "orchestrator" / "train" / "collectives.py"


def _distributed_uses(path: Path) -> list[str]:
    """Imports of torch.distributed and attribute uses ``torch.distributed.x`` in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("torch.distributed")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            found.append(node.module)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "torch"
            and any(a.name == "distributed" for a in node.names)
        ) or (
            isinstance(node, ast.Attribute)
            and node.attr == "distributed"
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        ):
            found.append("torch.distributed")
    return found


def test_no_module_but_collectives_calls_torch_distributed():
    offenders = {}
    for folder in ("orchestrator", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != OWNER and _distributed_uses(path):
                offenders[str(path.relative_to(ROOT))] = _distributed_uses(path)
    assert offenders == {}
    assert _distributed_uses(OWNER)  # the check can see an import when there is one


@pytest.mark.parametrize(
    "backend, device, want",
    [
        ("nccl", "cpu", "cuda:3"),  # NCCL serves CUDA tensors only: move the flag there
        ("NCCL", "cpu", "cuda:3"),
        ("gloo", "cpu", "cpu"),  # gloo takes CPU tensors as they are
        ("cpu:gloo,cuda:nccl", "cpu", "cpu"),  # a mixed group serves CPU tensors through gloo
        ("nccl", "cuda:1", "cuda:1"),  # a tensor already on a GPU stays there
    ],
)
def test_a_cpu_tensor_goes_to_the_gpu_only_for_an_nccl_only_group(backend, device, want):
    assert collective_device(backend, torch.device(device), 3) == torch.device(want)


def test_an_nccl_group_without_a_cuda_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        collective_device("nccl", torch.device("cpu"), None)


def test_reductions_over_a_real_gloo_group(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_reduce_worker, args=(2, str(tmp_path / "rendezvous")), nprocs=2, join=True)
    results = sorted((tmp_path).glob("rank*.txt"))
    assert [p.read_text() for p in results] == ["1.0 False 3.0 7.0", "1.0 False 3.0 7.0"]


def _reduce_worker(rank: int, world: int, rendezvous: str) -> None:
    import torch.distributed as dist  # the test sets up the group the way a launcher would

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        top = collectives.reduce_max(float(rank))
        agree = collectives.all_ranks_agree(rank == 0)
        total = collectives.all_reduce(torch.tensor([rank + 1.0]), "sum")
        message = collectives.broadcast(torch.tensor([7.0 if rank == 1 else 0.0]), src=1)
        out = Path(rendezvous).parent / f"rank{rank}.txt"
        out.write_text(f"{top} {agree} {float(total)} {float(message)}")
    finally:
        dist.destroy_process_group()
