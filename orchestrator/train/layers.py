"""DeepSeek-V3 building blocks in plain torch: RMSNorm, rotary embeddings, Multi-head Latent
Attention and SwiGLU feed-forward networks.

Shapes: B batch, S sequence, D model dim (``dim``), H heads. Every Linear has no bias, so the
parameter counts are exactly the planner's (``orchestrator.plan.params``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.spec.schema import ModelSpec


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 if it is in a narrower type; fp64 stays fp64 (the equivalence tests run in fp64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = at_least_fp32(x)
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def yarn_active(m: ModelSpec, seq_len: int) -> bool:
    """YaRN applies beyond the pretraining context, as in DeepSeek's reference (``max_seq_len >
    original_seq_len``); here the context is the phase's sequence length."""
    return seq_len > m.original_seq_len


def rotary_frequencies(m: ModelSpec, seq_len: int) -> torch.Tensor:
    """Inverse frequencies [dim/2] of the decoupled RoPE, YaRN-interpolated for long contexts.

    Follows ``precompute_freqs_cis`` of deepseek-ai/DeepSeek-V3 ``inference/model.py``: dimensions
    rotating more than ``beta_fast`` times over ``original_seq_len`` keep their frequency, those
    rotating fewer than ``beta_slow`` times are divided by ``rope_factor``, a linear ramp between."""
    dim, base = m.qk_rope_head_dim, m.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if yarn_active(m, seq_len):

        def correction_dim(rotations: float) -> float:
            return dim * math.log(m.original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(correction_dim(m.beta_fast)), 0)
        high = min(math.ceil(correction_dim(m.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / m.rope_factor * (1 - smooth) + freqs * smooth
    return freqs


def attention_scale(m: ModelSpec, seq_len: int) -> float:
    """Softmax scale: 1/sqrt(qk head dim), times YaRN's mscale^2 for long contexts (reference MLA)."""
    scale = (m.qk_nope_head_dim + m.qk_rope_head_dim) ** -0.5
    if yarn_active(m, seq_len):
        mscale = 0.1 * m.mscale * math.log(m.rope_factor) + 1.0
        scale *= mscale * mscale
    return scale


def rotary_tables(m: ModelSpec, seq_len: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [S, dim/2] for rotary position embeddings (computed in fp64, then cast)."""
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), rotary_frequencies(m, seq_len))
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., 2i], x[..., 2i+1]) of x [B, S, H, d] by the position's angle."""
    pairs = at_least_fp32(x).unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class MultiHeadLatentAttention(nn.Module):
    """MLA: queries through a low-rank bottleneck (``q_lora_rank``; 0 = direct), keys and values
    through a shared compressed latent (``kv_lora_rank``), and a decoupled RoPE key shared by all
    heads (``qk_rope_head_dim``). Causal attention by ``scaled_dot_product_attention``."""

    def __init__(self, m: ModelSpec):
        super().__init__()
        self.n_heads = m.n_heads
        self.nope_dim, self.rope_dim, self.v_dim = m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
        self.kv_lora_rank = m.kv_lora_rank
        self.spec = m
        qk_head = self.nope_dim + self.rope_dim
        if m.q_lora_rank > 0:
            self.wq_a = nn.Linear(m.dim, m.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(m.q_lora_rank, m.norm_eps)
            self.wq_b = nn.Linear(m.q_lora_rank, m.n_heads * qk_head, bias=False)
        else:
            self.wq = nn.Linear(m.dim, m.n_heads * qk_head, bias=False)
        self.wkv_a = nn.Linear(m.dim, m.kv_lora_rank + self.rope_dim, bias=False)
        self.kv_norm = RMSNorm(m.kv_lora_rank, m.norm_eps)
        self.wkv_b = nn.Linear(m.kv_lora_rank, m.n_heads * (self.nope_dim + self.v_dim), bias=False)
        self.wo = nn.Linear(m.n_heads * self.v_dim, m.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, _ = x.shape
        H = self.n_heads
        q = self.wq_b(self.q_norm(self.wq_a(x))) if hasattr(self, "wq_a") else self.wq(x)
        q = q.view(B, S, H, self.nope_dim + self.rope_dim)
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_rope = self.wkv_a(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        cos, sin = rotary_tables(self.spec, S, x.device, at_least_fp32(x).dtype)
        q_rope = apply_rotary(q_rope, cos, sin)
        k_rope = apply_rotary(k_rope.unsqueeze(2), cos, sin)  # one rotary key shared by all heads
        kv = self.wkv_b(self.kv_norm(latent)).view(B, S, H, self.nope_dim + self.v_dim)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1).transpose(1, 2)
        k = torch.cat([k_nope, k_rope.expand(B, S, H, self.rope_dim)], dim=-1).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v.transpose(1, 2), is_causal=True, scale=attention_scale(self.spec, S)
        )
        return self.wo(out.transpose(1, 2).reshape(B, S, H * self.v_dim))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``: the dense FFN, each expert, and the shared experts (fused)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
