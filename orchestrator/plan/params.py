"""Exact parameter counts of a DeepSeek-V3-style model, component by component.

The runtime's model (``orchestrator.train.model``) is built from the same fields; a test asserts
that its ``numel()`` per module equals these counts, so the plan and the model cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.spec.schema import ModelSpec


@dataclass(frozen=True)
class BlockParams:
    """Parameters of one transformer block, split by how they are sharded and activated."""

    attention: int  # MLA projections and their norms
    norms: int  # the two RMSNorms around attention and FFN
    dense_ffn: int  # dense FFN (0 in MoE blocks)
    shared_experts: int  # always-on experts (0 in dense blocks)
    routed_experts: int  # all routed experts of the block (sharded over EP)
    gate: int  # router weight
    expert_size: int  # one routed expert
    activated_routed: int  # routed experts a token uses

    @property
    def total(self) -> int:
        return self.attention + self.norms + self.dense_ffn + self.shared_experts + self.routed_experts + self.gate

    @property
    def active(self) -> int:
        """Parameters one token passes through in this block."""
        return self.attention + self.norms + self.dense_ffn + self.shared_experts + self.gate + self.activated_routed

    @property
    def non_expert(self) -> int:
        """Parameters replicated on every rank of the stage (everything but routed experts)."""
        return self.total - self.routed_experts


def attention_params(m: ModelSpec) -> int:
    qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
    if m.q_lora_rank > 0:
        query = m.dim * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * m.n_heads * qk_head
    else:
        query = m.dim * m.n_heads * qk_head
    kv_down = m.dim * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
    kv_up = m.kv_lora_rank * m.n_heads * (m.qk_nope_head_dim + m.v_head_dim)
    out = m.n_heads * m.v_head_dim * m.dim
    return query + kv_down + kv_up + out


def expert_params(m: ModelSpec) -> int:
    """A SwiGLU expert: gate, up and down projections."""
    return 3 * m.dim * m.moe_inter_dim


def block_params(m: ModelSpec, moe: bool) -> BlockParams:
    expert = expert_params(m)
    return BlockParams(
        attention=attention_params(m),
        norms=2 * m.dim,
        dense_ffn=0 if moe else 3 * m.dim * m.inter_dim,
        shared_experts=m.n_shared_experts * expert if moe else 0,
        routed_experts=m.n_routed_experts * expert if moe else 0,
        gate=m.n_routed_experts * m.dim if moe else 0,
        expert_size=expert,
        activated_routed=m.n_activated_experts * expert if moe else 0,
    )


def is_moe_block(m: ModelSpec, index: int) -> bool:
    return index >= m.n_dense_layers


def embedding_params(m: ModelSpec) -> int:
    return m.vocab_size * m.dim


def head_params(m: ModelSpec) -> int:
    """Final RMSNorm and the untied output projection."""
    return m.dim + m.vocab_size * m.dim


def mtp_module_params(m: ModelSpec) -> int:
    """One multi-token-prediction module without the embedding and head it shares with the model:
    two RMSNorms, the 2*dim -> dim projection, one MoE block, and its own final norm."""
    return 2 * m.dim + 2 * m.dim * m.dim + block_params(m, moe=m.n_routed_experts > 0).total + m.dim


@dataclass(frozen=True)
class ModelParams:
    total: int  # the main model (what "671B" counts)
    active: int  # per token, matmul weights: blocks + head (the embedding is a lookup)
    active_with_embedding: int
    embedding: int
    head: int
    mtp: int  # all MTP modules, unique parameters
    routed_experts: int

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "active": self.active,
            "active_with_embedding": self.active_with_embedding,
            "embedding": self.embedding,
            "head": self.head,
            "mtp": self.mtp,
            "total_with_mtp": self.total + self.mtp,
            "routed_experts": self.routed_experts,
        }


def model_params(m: ModelSpec) -> ModelParams:
    blocks = [block_params(m, is_moe_block(m, i)) for i in range(m.n_layers)]
    emb, head = embedding_params(m), head_params(m)
    active_blocks = sum(b.active for b in blocks)
    return ModelParams(
        total=emb + head + sum(b.total for b in blocks),
        active=active_blocks + head,
        active_with_embedding=active_blocks + head + emb,
        embedding=emb,
        head=head,
        mtp=m.mtp_depth * mtp_module_params(m),
        routed_experts=sum(b.routed_experts for b in blocks),
    )
