"""The DeepSeek-V3-style model as a sequence of pipeline layers, plus a single-process wrapper.

A training sample is ``seq_len + 1 + mtp_depth`` tokens. Activations between layers are tuples
``(hidden, aux_loss, tokens)`` so that they can cross pipeline stages: ``aux_loss`` accumulates the
MoE balance losses of every stage, ``tokens`` lets the multi-token-prediction modules on the last
stage embed the future tokens they condition on.

Layers, in pipeline order (the planner's partition places them):
``embed, block 0..n-1, [mtp_embed (tied to embed)], output (norm, head, MTP modules)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from orchestrator.plan.params import is_moe_block
from orchestrator.spec.schema import BalanceSpec, ModelSpec
from orchestrator.train.activations import checkpoint_layers, chunked_cross_entropy
from orchestrator.train.layers import MultiHeadLatentAttention, RMSNorm, SwiGLU
from orchestrator.train.moe import DeepSeekMoE, derived_seed, init_weights


class TransformerBlock(nn.Module):
    """Pre-norm block: MLA attention, then a dense SwiGLU or a DeepSeekMoE FFN."""

    def __init__(
        self,
        m: ModelSpec,
        balance: BalanceSpec,
        index: int,
        ep_size: int,
        ep_rank: int,
        seed: int,
        moe: bool | None = None,
    ):
        super().__init__()
        self.index = index
        self.attn_norm = RMSNorm(m.dim, m.norm_eps)
        self.attn = MultiHeadLatentAttention(m)
        self.ffn_norm = RMSNorm(m.dim, m.norm_eps)
        block_seed = derived_seed(seed, "block", index)
        init_weights(self.attn, derived_seed(block_seed, "attn"), m.init_std)
        moe = is_moe_block(m, index) if moe is None else moe
        if moe:
            self.ffn = DeepSeekMoE(m, balance, ep_size, ep_rank, derived_seed(block_seed, "moe"))
        else:
            self.ffn = SwiGLU(m.dim, m.inter_dim)
            init_weights(self.ffn, derived_seed(block_seed, "ffn"), m.init_std)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h + self.attn(self.attn_norm(h))
        if isinstance(self.ffn, DeepSeekMoE):
            out, aux = self.ffn(self.ffn_norm(h))
        else:
            out, aux = self.ffn(self.ffn_norm(h)), h.new_zeros(())
        return h + out, aux


def main_seq_len(tokens: torch.Tensor, mtp_depth: int) -> int:
    return tokens.shape[1] - 1 - mtp_depth


class EmbeddingLayer(nn.Module):
    """Token embedding; the first pipeline layer. Also tied onto the last stage for MTP."""

    def __init__(self, m: ModelSpec, seed: int):
        super().__init__()
        self.mtp_depth = m.mtp_depth
        self.embed = nn.Embedding(m.vocab_size, m.dim)
        init_weights(self.embed, derived_seed(seed, "embed"), m.init_std)

    def forward(self, tokens: torch.Tensor):
        h = self.embed(tokens[:, : main_seq_len(tokens, self.mtp_depth)])
        # keep the accumulator in the autograd graph on every stage, so the pipeline can send its gradient back
        aux = (h[..., :1] * 0.0).sum()
        return h, aux, tokens


def embed_future_tokens(layer: EmbeddingLayer, inputs):
    """forward_fn of the tied embedding on the last stage: embed t_{i+k} for each MTP depth k."""
    h, aux, tokens = inputs
    S = h.shape[1]
    future = torch.stack([layer.embed(tokens[:, k : k + S]) for k in range(1, layer.mtp_depth + 1)])
    return h, aux, tokens, future


class BlockLayer(nn.Module):
    def __init__(self, m: ModelSpec, balance: BalanceSpec, index: int, ep_size: int, ep_rank: int, seed: int):
        super().__init__()
        self.block = TransformerBlock(m, balance, index, ep_size, ep_rank, seed)

    def forward(self, inputs):
        h, aux, tokens = inputs
        h, block_aux = self.block(h)
        return h, aux + block_aux, tokens


class MTPModule(nn.Module):
    """One multi-token-prediction depth: combine the previous depth's hidden state with the
    embedding of the next token, run one MoE block, predict with the shared head."""

    def __init__(self, m: ModelSpec, balance: BalanceSpec, depth: int, ep_size: int, ep_rank: int, seed: int):
        super().__init__()
        self.hnorm = RMSNorm(m.dim, m.norm_eps)
        self.enorm = RMSNorm(m.dim, m.norm_eps)
        self.proj = nn.Linear(2 * m.dim, m.dim, bias=False)
        mtp_seed = derived_seed(seed, "mtp", depth)
        init_weights(self.proj, mtp_seed, m.init_std)
        self.block = TransformerBlock(
            m, balance, m.n_layers + depth, ep_size, ep_rank, mtp_seed, moe=m.n_routed_experts > 0
        )
        self.norm = RMSNorm(m.dim, m.norm_eps)


class OutputLayer(nn.Module):
    """Final norm and head, then the MTP modules (which share the head); computes the cross-entropy
    of the main and MTP predictions in chunks (``chunked_cross_entropy``) from the tokens carried
    through the pipeline, so the full logits never exist. ``checkpoint_mtp`` recomputes each MTP
    block in backward, as the pipeline does for the main blocks."""

    def __init__(
        self, m: ModelSpec, balance: BalanceSpec, ep_size: int, ep_rank: int, seed: int, checkpoint_mtp: bool = False
    ):
        super().__init__()
        self.norm = RMSNorm(m.dim, m.norm_eps)
        self.head = nn.Linear(m.dim, m.vocab_size, bias=False)
        init_weights(self.head, derived_seed(seed, "head"), m.init_std)
        self.mtp = nn.ModuleList(MTPModule(m, balance, d, ep_size, ep_rank, seed) for d in range(m.mtp_depth))
        self.checkpoint_mtp = checkpoint_mtp

    def _mtp_block(self, module: MTPModule, h: torch.Tensor):
        if self.checkpoint_mtp and torch.is_grad_enabled():
            return checkpoint_layers(module.block, h)
        return module.block(h)

    def forward(self, inputs):
        """-> (main loss, MTP losses [depth], balance loss): scalars, ready for ``LanguageModelLoss``."""
        if self.mtp:
            h, aux, tokens, future = inputs
        else:
            h, aux, tokens = inputs
        S = h.shape[1]
        lm = chunked_cross_entropy(self.norm(h), self.head.weight, tokens[:, 1 : S + 1])
        mtp_losses, prev = [], h
        for depth, module in enumerate(self.mtp):
            prev = module.proj(torch.cat([module.hnorm(prev), module.enorm(future[depth])], dim=-1))
            prev, block_aux = self._mtp_block(module, prev)
            aux = aux + block_aux
            mtp_losses.append(
                chunked_cross_entropy(module.norm(prev), self.head.weight, tokens[:, depth + 2 : depth + 2 + S])
            )
        stacked = torch.stack(mtp_losses) if mtp_losses else lm.new_zeros((0,))
        return lm, stacked, aux


@dataclass
class LossParts:
    """The components of the last loss computed, for reporting (detached)."""

    values: dict[str, torch.Tensor] = field(default_factory=dict)


class LanguageModelLoss:
    """Next-token cross-entropy + weighted MTP cross-entropy + MoE balance losses. ``mtp_weight``
    is set each step from the spec's schedule (V3: 0.3, then 0.1 after 10T tokens)."""

    def __init__(self, mtp_weight: float):
        self.mtp_weight = mtp_weight
        self.last = LossParts()

    def __call__(self, outputs, tokens: torch.Tensor) -> torch.Tensor:
        lm, mtp_losses, aux = outputs
        total = lm + aux
        mtp = lm.new_zeros(())
        if mtp_losses.numel():
            mtp = mtp_losses.mean()
            total = total + self.mtp_weight * mtp
        self.last.values = {"lm_loss": lm.detach(), "mtp_loss": mtp.detach(), "balance_loss": aux.detach().reshape(())}
        return total


def build_layers(
    m: ModelSpec, balance: BalanceSpec, seed: int, ep_size: int = 1, ep_rank: int = 0, checkpointing: bool = False
) -> dict:
    """Constructors for every layer, in pipeline order (used by both the pipeline and the local model)."""
    return {
        "embed": lambda: EmbeddingLayer(m, seed),
        "blocks": [lambda i=i: BlockLayer(m, balance, i, ep_size, ep_rank, seed) for i in range(m.n_layers)],
        "output": lambda: OutputLayer(m, balance, ep_size, ep_rank, seed, checkpointing),
    }


class LocalModel(nn.Module):
    """The whole model in one process (all experts local): the reference for equivalence tests
    and the model a single-device run trains."""

    def __init__(
        self, m: ModelSpec, balance: BalanceSpec, seed: int, mtp_weight: float = 0.3, checkpointing: bool = False
    ):
        super().__init__()
        self.checkpointing = checkpointing
        makers = build_layers(m, balance, seed, checkpointing=checkpointing)
        self.embedding = makers["embed"]()
        self.blocks = nn.ModuleList(make() for make in makers["blocks"])
        self.output = makers["output"]()
        self.loss_fn = LanguageModelLoss(mtp_weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        for block in self.blocks:
            recompute = self.checkpointing and torch.is_grad_enabled()
            x = checkpoint_layers(lambda *a, b=block: b(a), *x) if recompute else block(x)
        if self.output.mtp:
            x = embed_future_tokens(self.embedding, x)
        return self.loss_fn(self.output(x), tokens)

    def moe_layers(self) -> list[DeepSeekMoE]:
        return [m for m in self.modules() if isinstance(m, DeepSeekMoE)]
