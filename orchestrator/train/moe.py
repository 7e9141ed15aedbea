"""DeepSeekMoE: shared experts plus routed experts, sharded over expert-parallel ranks.

Routing follows DeepSeek-V3: sigmoid (or softmax) affinities, group-limited top-k selection
(``n_expert_groups``/``n_limited_groups``), gate weights normalised over the chosen experts and
scaled by ``route_scale``, and auxiliary-loss-free balancing: a per-expert bias added to the
scores *only for choosing* experts, moved after every step by ``bias_update_speed`` against the
expert's load. A small sequence-wise balance loss is added. No token is ever dropped.

Tokens reach the rank holding their expert by an all-to-all over the expert-parallel group (uneven
splits, no capacity padding) and come back by the reverse all-to-all.

The layer subclasses DeepSpeed's ``MoE`` only so that the DeepSpeed engine recognises it: routed
expert parameters carry ``allreduce=False`` and the expert group's name, so the engine averages
their gradients over the expert-data-parallel group and ZeRO-1 partitions them there. DeepSpeed's
own gate (softmax top-k with capacity and token dropping) cannot express V3's routing.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from deepspeed.moe.layer import MoE as DeepSpeedMoE
from deepspeed.utils import groups
from torch import nn

from orchestrator.spec.schema import BalanceSpec, ModelSpec
from orchestrator.train import collectives
from orchestrator.train.activations import recomputing
from orchestrator.train.layers import SwiGLU, at_least_fp32

INIT_STD = 0.006  # DeepSeek-V3 report, section 4.2; the spec's model.init_std overrides it


def derived_seed(*parts: object) -> int:
    """A stable seed from any parts (layer index, expert id ...), the same in every process."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def init_weights(module: nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Deterministic initialisation independent of the global RNG and of which rank builds it:
    the same layer gets the same weights in a sharded run and in a single process. Drawn in fp64
    and cast, so an fp64 model (the equivalence tests) starts from the same values as an fp32 one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() >= 2:  # matrices; norm gains keep their ones
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * std)


class _AllToAll(torch.autograd.Function):
    """all_to_all_single with autograd: the backward is the reverse exchange."""

    @staticmethod
    def forward(ctx, x, out_splits: list[int], in_splits: list[int], group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty((sum(out_splits),) + tuple(x.shape[1:]))
        collectives.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        back = grad.new_empty((sum(in_splits),) + tuple(grad.shape[1:]))
        collectives.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


class Router(nn.Module):
    """Chooses ``n_activated_experts`` experts per token and keeps the balancing state."""

    def __init__(self, m: ModelSpec, balance: BalanceSpec):
        super().__init__()
        self.m, self.balance = m, balance
        self.weight = nn.Parameter(torch.empty(m.n_routed_experts, m.dim))
        # persistent: part of the training state, checkpointed with the layer
        self.register_buffer("balance_bias", torch.zeros(m.n_routed_experts))
        # tokens routed to each expert since the last bias update (this rank only)
        self.register_buffer("load", torch.zeros(m.n_routed_experts), persistent=False)

    def forward(self, x: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [T, D] -> expert indices [T, k], gate weights [T, k], sequence balance loss (scalar)."""
        m = self.m
        logits = F.linear(at_least_fp32(x), at_least_fp32(self.weight))
        scores = logits.sigmoid() if m.score_func == "sigmoid" else logits.softmax(dim=-1)
        choice = scores.detach() + self.balance_bias
        if m.n_expert_groups > 1 and m.n_limited_groups < m.n_expert_groups:
            choice = self._limit_groups(choice)
        indices = choice.topk(m.n_activated_experts, dim=-1).indices
        weights = scores.gather(1, indices)
        if m.score_func == "sigmoid":
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * m.route_scale
        if not recomputing():  # a checkpointed block's recompute routes the same tokens again
            with torch.no_grad():
                self.load += torch.bincount(indices.flatten(), minlength=m.n_routed_experts).to(self.load.dtype)
        return indices, weights.type_as(x), self._sequence_balance_loss(scores, indices, seq_len)

    def _limit_groups(self, choice: torch.Tensor) -> torch.Tensor:
        m = self.m
        grouped = choice.view(choice.shape[0], m.n_expert_groups, -1)
        per_group = grouped.topk(2, dim=-1).values.sum(-1) if grouped.shape[-1] >= 2 else grouped.amax(-1)
        keep = per_group.topk(m.n_limited_groups, dim=-1).indices
        mask = torch.ones_like(per_group, dtype=torch.bool).scatter(1, keep, False)
        return grouped.masked_fill(mask.unsqueeze(-1), float("-inf")).view_as(choice)

    def _sequence_balance_loss(self, scores: torch.Tensor, indices: torch.Tensor, seq_len: int) -> torch.Tensor:
        """V3 eq. 17-20: alpha * sum_i f_i * P_i per sequence, averaged over sequences."""
        alpha = self.balance.sequence_aux_loss_weight
        if alpha == 0:
            return scores.new_zeros(())
        E, k = self.m.n_routed_experts, self.m.n_activated_experts
        seqs = scores.shape[0] // seq_len
        chosen = torch.zeros_like(scores).scatter(1, indices, 1.0).view(seqs, seq_len, E)
        f = chosen.sum(1) * (E / (k * seq_len))
        p = (scores / scores.sum(-1, keepdim=True)).view(seqs, seq_len, E).mean(1)
        return alpha * (f * p).sum(-1).mean()

    def _apply(self, fn, recurse=True):
        """Keep the balance state in fp32 when the module is cast (DeepSpeed's bf16 engine casts the
        whole model): a 0.001 step on a bias near 1 is below bf16's resolution."""
        super()._apply(fn, recurse)
        for name in ("balance_bias", "load"):
            buffer = getattr(self, name)
            if buffer.dtype not in (torch.float32, torch.float64):
                setattr(self, name, buffer.float())
        return self

    @torch.no_grad()
    def update_bias(self, group=None, speed: float | None = None) -> float:
        """Move the balance bias against this step's load (summed over the data-parallel group) by
        ``speed`` (default: the spec's); return the load imbalance max/mean of the step."""
        load = self.load.clone()
        if group is not None and collectives.is_initialised():
            collectives.all_reduce(load, group=group)
        mean = load.mean()
        imbalance = float(load.max() / mean) if mean > 0 else 1.0
        speed = self.balance.bias_update_speed if speed is None else speed
        self.balance_bias += speed * torch.sign(mean - load)
        self.load.zero_()
        return imbalance


class DeepSeekMoE(DeepSpeedMoE):
    """Shared experts + routed experts; this rank holds routed experts
    ``[ep_rank * L, (ep_rank + 1) * L)`` with ``L = n_routed_experts / ep_size``."""

    def __init__(self, m: ModelSpec, balance: BalanceSpec, ep_size: int, ep_rank: int, seed: int):
        nn.Module.__init__(self)  # DeepSpeed's MoE.__init__ would build its own gate and experts
        if m.n_routed_experts % ep_size:
            raise ValueError(f"{m.n_routed_experts} experts cannot be split over {ep_size} ranks")
        self.num_experts, self.ep_size, self.ep_rank = m.n_routed_experts, ep_size, ep_rank
        self.num_local_experts = m.n_routed_experts // ep_size
        self.expert_group_name = f"ep_size_{ep_size}"
        self.enable_expert_tensor_parallelism, self.use_residual = False, False
        self.ep_group = None
        self.router = Router(m, balance)
        init_weights(self.router, derived_seed(seed, "router"), m.init_std)
        self.shared = SwiGLU(m.dim, m.n_shared_experts * m.moe_inter_dim) if m.n_shared_experts else None
        if self.shared is not None:
            init_weights(self.shared, derived_seed(seed, "shared"), m.init_std)
        self.experts = nn.ModuleList()
        for local in range(self.num_local_experts):
            expert = SwiGLU(m.dim, m.moe_inter_dim)
            init_weights(expert, derived_seed(seed, "expert", ep_rank * self.num_local_experts + local), m.init_std)
            for param in expert.parameters():
                param.allreduce = False
                param.group_name = self.expert_group_name
            self.experts.append(expert)

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """Called by the DeepSpeed engine: create (once) and attach the expert-parallel group."""
        if self.expert_group_name not in groups._get_expert_parallel_group_dict():
            groups._create_expert_and_data_parallel(
                self.ep_size, use_data_before_expert_parallel_=use_data_before_expert_parallel_
            )
        self.ep_group = groups._get_expert_parallel_group(self.expert_group_name)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, D = x.shape
        flat = x.reshape(B * S, D)
        indices, weights, balance_loss = self.router(flat, S)
        k = indices.shape[1]
        expert_of = indices.flatten()
        order = torch.argsort(expert_of, stable=True)
        token_of = torch.arange(B * S, device=x.device).repeat_interleave(k)[order]
        counts = torch.bincount(expert_of, minlength=self.num_experts)
        outputs = self._run_experts(flat[token_of], counts)
        gate = weights.flatten()[order].unsqueeze(1)
        routed = torch.zeros_like(flat).index_add(0, token_of, outputs * gate)
        out = routed if self.shared is None else routed + self.shared(flat)
        return out.view(B, S, D), balance_loss

    def _run_experts(self, tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """tokens sorted by global expert id, ``counts`` per global expert -> expert outputs, same order."""
        if self.ep_size == 1 or self.ep_group is None:
            return self._local_experts(tokens, counts.tolist())
        L, ep = self.num_local_experts, self.ep_size
        send_per_expert = counts.view(ep, L)
        recv_per_expert = torch.empty_like(send_per_expert)
        collectives.all_to_all_single(recv_per_expert, send_per_expert, group=self.ep_group)
        send_splits = send_per_expert.sum(1).tolist()
        recv_splits = recv_per_expert.sum(1).tolist()
        received = _AllToAll.apply(tokens, recv_splits, send_splits, self.ep_group)
        # received is grouped by source rank, then expert; regroup by local expert
        source_expert = torch.arange(ep * L, device=tokens.device).view(ep, L) % L
        expert_of_row = source_expert.flatten().repeat_interleave(recv_per_expert.flatten())
        by_expert = torch.argsort(expert_of_row, stable=True)
        per_local = recv_per_expert.sum(0).tolist()
        computed = self._local_experts(received[by_expert], per_local)
        restored = torch.empty_like(computed).index_copy(0, by_expert, computed)
        return _AllToAll.apply(restored, send_splits, recv_splits, self.ep_group)

    def _local_experts(self, tokens: torch.Tensor, per_expert: list[int]) -> torch.Tensor:
        if self.ep_size == 1:
            per_expert = per_expert[: self.num_local_experts]
        chunks = tokens.split(per_expert, dim=0)
        return torch.cat([expert(chunk) for expert, chunk in zip(self.experts, chunks)], dim=0)

    def update_balance(self, data_parallel_group=None, speed: float | None = None) -> float:
        return self.router.update_bias(data_parallel_group, speed)
