"""Activation memory on CPU, measured against plan/memory.py's estimate.

Bytes held for backward per micro-batch (``saved_for_backward_bytes``: saved-tensor hooks plus
DeepSpeed checkpoint inputs), for one dense and one MoE block of the local V3 miniature (fp32)
with and without activation checkpointing, and for the output head with its chunked cross-entropy,
each beside the planner's figure for the same config. Not a timing: the numbers are exact counts.
"""

from __future__ import annotations

import torch

from bench.harness import Section
from orchestrator.plan.memory import ACTIVATION_SCALE, LOSS_CHUNK_TOKENS, block_activation_bytes
from orchestrator.spec.loader import load_spec
from orchestrator.train.activations import checkpoint_layers, saved_for_backward_bytes
from orchestrator.train.model import BlockLayer, OutputLayer

SPEC = "jobs/v3_pretrain.yaml"


def _block(spec, index: int, tokens: int, checkpointing: bool) -> int:
    block = BlockLayer(spec.model, spec.training.balance, index, 1, 0, spec.training.seed)
    h = torch.randn(1, tokens, spec.model.dim, requires_grad=True)
    ids = torch.randint(0, spec.model.vocab_size, (1, tokens + 2))
    aux = torch.zeros(())
    if checkpointing:
        return saved_for_backward_bytes(
            lambda: checkpoint_layers(lambda *a: block(a), h, aux, ids), block.parameters()
        )[0]
    return saved_for_backward_bytes(lambda: block((h, aux, ids)), block.parameters())[0]


def _head(spec, tokens: int) -> tuple[int, int]:
    """(bytes the head keeps for backward, bytes of the full fp32 logits of the main and MTP heads)."""
    m = spec.model
    head = OutputLayer(m, spec.training.balance, 1, 0, spec.training.seed, checkpoint_mtp=True)
    h = torch.randn(1, tokens, m.dim, requires_grad=True)
    ids = torch.randint(0, m.vocab_size, (1, tokens + 2))
    future = torch.randn(m.mtp_depth, 1, tokens, m.dim)  # the MTP depths' next-token embeddings
    measured, _ = saved_for_backward_bytes(lambda: head((h, torch.zeros(()), ids, future)), head.parameters())
    return measured, 4 * tokens * m.vocab_size * (1 + m.mtp_depth)


def run() -> Section:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    spec = load_spec(SPEC, profile="local")
    scale = ACTIVATION_SCALE["fp32"]
    rows = ["| block | tokens | checkpointing | measured | planned | measured / planned |", "|---|---|---|---|---|---|"]
    for index, kind in ((0, "dense"), (2, "MoE")):
        for tokens in (64, 512):
            for checkpointing in (True, False):
                kept, full = block_activation_bytes(spec.model, index, tokens, checkpointing)
                planned = (kept if checkpointing else full) * scale
                measured = _block(spec, index, tokens, checkpointing)
                rows.append(
                    f"| {kind} | {tokens} | {'yes' if checkpointing else 'no'} | {measured / 1024:,.1f} KiB | "
                    f"{planned / 1024:,.1f} KiB | {measured / planned:.2f} |"
                )
    head_rows = [
        "| tokens | head + MTP module kept for backward (MTP block checkpointed) | full fp32 logits (main + MTP) |",
        "|---|---|---|",
    ]
    for tokens in (64, 512):
        kept, logits = _head(spec, tokens)
        head_rows.append(f"| {tokens} | {kept / 1024:,.1f} KiB | {logits / 1024:,.1f} KiB |")
    body = [
        "Bytes held for backward per micro-batch (saved-tensor hooks + DeepSpeed checkpoint inputs), local V3 "
        "miniature in fp32 on CPU, against `plan/memory.py` (its bf16 figures x2 for fp32).",
        "",
        *rows,
        "",
        "With checkpointing a block keeps its input (the extra ~3% are the int64 token ids every pipeline "
        "activation carries for the MTP head). Without it the planner's formula (Korthikanti et al., flash "
        "attention) is exceeded: on CPU, SDPA's math path keeps the attention probabilities (S^2 per head), "
        "so the ratio grows with the sequence length; on a GPU with flash attention it would not.",
        "",
        f"Output head with chunked cross-entropy ({LOSS_CHUNK_TOKENS:,}-token chunks):",
        "",
        *head_rows,
    ]
    return Section("Activation memory: measured vs planned (CPU)", "python -m bench.run_all activations", body)
