"""What keeps activation memory within the plan: per-layer checkpointing and chunked cross-entropy.

``plan/memory.py`` assumes two things of the runtime, and this module provides both:

- **Activation checkpointing per block.** Only a block's input is kept for backward; the block is
  recomputed in the backward pass. The pipeline uses DeepSpeed's own ``checkpointing.checkpoint``
  (``deepspeed/runtime/activation_checkpointing/checkpointing.py``, DeepSpeed 0.19.8) through
  ``PipelineModule(activation_checkpoint_interval=1, checkpointable_layers=["BlockLayer"])``.
  The reentrant variant saves the inputs with ``ctx.save_for_backward``, so a saved-tensors hook
  sees exactly what is held (``tests/unit/test_activation_memory.py`` measures it).
- **Chunked cross-entropy.** The output head's fp32 logits exist for ``LOSS_CHUNK_TOKENS`` tokens
  at a time, in the forward pass and again in the backward pass; only the hidden states, the head
  weight and the targets are saved.

A recomputed forward must not count expert load a second time: ``recomputing()`` tells the router.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

from orchestrator.plan.memory import LOSS_CHUNK_TOKENS

_state = threading.local()


def recomputing() -> bool:
    """True while a checkpointed block is being recomputed for its backward pass."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def _recompute():
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def checkpoint_layers(function, *args):
    """``activation_checkpoint_func`` for the pipeline (and the single-device model): DeepSpeed's
    reentrant checkpoint, with every call after the first marked as a recompute."""
    from deepspeed.runtime.activation_checkpointing import checkpointing

    calls = 0

    def run(*inputs):
        nonlocal calls
        calls += 1
        if calls == 1:
            return function(*inputs)
        with _recompute():
            return function(*inputs)

    return checkpointing.checkpoint(run, *args)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy over tokens of ``hidden @ weight.T`` without materialising all logits."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk = chunk
        total = torch.zeros((), dtype=_wide(hidden.dtype), device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            logits = F.linear(hidden[start : start + chunk], weight).to(total.dtype)
            total += F.cross_entropy(logits, targets[start : start + chunk], reduction="sum")
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        hidden, weight, targets = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=_wide(weight.dtype), device=weight.device)
            if ctx.needs_input_grad[1]
            else None
        )
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = hidden[start : start + ctx.chunk]
            logits = F.linear(rows, weight).to(grad_total.dtype)
            dlogits = logits.softmax(-1)
            dlogits[torch.arange(rows.shape[0], device=rows.device), targets[start : start + ctx.chunk]] -= 1
            dlogits *= grad_total
            if grad_hidden is not None:
                grad_hidden[start : start + ctx.chunk] = (dlogits @ weight.to(dlogits.dtype)).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += dlogits.t() @ rows.to(dlogits.dtype)
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = LOSS_CHUNK_TOKENS
) -> torch.Tensor:
    """Mean next-token cross-entropy of ``hidden [B, S, D]`` through the head ``weight [V, D]``
    against ``targets [B, S]``, in fp32 (fp64 for fp64 inputs), ``chunk`` tokens of logits at a time."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    return _ChunkedCrossEntropy.apply(flat, weight, targets.reshape(-1), chunk) / flat.shape[0]


def saved_for_backward_bytes(forward, parameters=()) -> tuple[int, object]:
    """Run ``forward()`` and count the bytes its autograd graph holds for the backward pass: every
    tensor saved through autograd (seen by a saved-tensors hook) plus the inputs DeepSpeed's
    checkpoint keeps on its context (``ctx.deepspeed_saved_tensors``, invisible to hooks). Storages
    are counted once however many views are saved; the storages of ``parameters`` are left out (weights
    saved by reference are not activation memory). Returns (bytes, forward's result).

    The measurement behind ``tests/unit/test_activation_memory.py`` and bench/RESULTS.md's CPU
    memory table, compared there with ``plan/memory.py``'s activation estimate."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    seen, stack = set(), [t.grad_fn for t in outputs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for tensor in getattr(node, "deepspeed_saved_tensors", None) or ():
            if isinstance(tensor, torch.Tensor):
                storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        stack.extend(fn for fn, _ in node.next_functions)
    for param in parameters:
        storages.pop(param.untyped_storage().data_ptr(), None)
    return sum(storages.values()), result
