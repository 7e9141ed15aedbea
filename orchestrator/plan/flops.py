"""Training FLOPs per token: 6 x activated matmul weights + causal attention scores.

The convention is the one DeepSeek's published 250 GFLOPs/token (ISCA'25 Table 2) uses: the main
model only. The multi-token-prediction modules' extra work is reported apart, because the
published utilisation (38.9% MFU) was computed without it.
"""

from __future__ import annotations

from orchestrator.plan.params import block_params, head_params, is_moe_block
from orchestrator.spec.schema import ModelSpec

TRAIN_MULTIPLIER = 6  # forward (2) + backward (4) FLOPs per weight per token


def attention_score_flops(m: ModelSpec, seq_len: int) -> float:
    """Training FLOPs per token per layer for QK^T and AV under a causal mask (half the keys)."""
    per_head = (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.v_head_dim
    forward = 2 * m.n_heads * per_head * (seq_len / 2)
    return 3 * forward


def block_flops(m: ModelSpec, index: int, seq_len: int) -> float:
    return TRAIN_MULTIPLIER * block_params(m, is_moe_block(m, index)).active + attention_score_flops(m, seq_len)


def head_flops(m: ModelSpec) -> float:
    return TRAIN_MULTIPLIER * head_params(m)


def mtp_flops(m: ModelSpec, seq_len: int) -> float:
    """All MTP modules: projection, one MoE block and the shared head each."""
    per_module = (
        TRAIN_MULTIPLIER * (2 * m.dim * m.dim)
        + TRAIN_MULTIPLIER * block_params(m, m.n_routed_experts > 0).active
        + attention_score_flops(m, seq_len)
        + head_flops(m)
    )
    return m.mtp_depth * per_module


def model_flops_per_token(m: ModelSpec, seq_len: int) -> float:
    """Main-model training FLOPs per token (the MFU convention)."""
    return sum(block_flops(m, i, seq_len) for i in range(m.n_layers)) + head_flops(m)
