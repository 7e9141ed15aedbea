"""Memory per device: weights, gradients, ZeRO-1 optimizer shards and in-flight activations.

An estimate with its assumptions written down, good enough to reject layouts that cannot fit:
- weights in the training precision (bf16: 2 bytes; fp8 keeps bf16 master copies: 2; fp32: 4);
- gradients accumulated in fp32 (4 bytes) whatever the training precision: the runtime sets
  DeepSpeed's ``grad_accum_dtype`` to fp32 under bf16 (``train/pipeline.py``), whose
  ``BF16_Optimizer`` keeps a full fp32 gradient buffer per rank (not partitioned by ZeRO-1);
- AdamW with fp32 master weights and two fp32 moments (12 bytes/param, 8 in fp32 training),
  partitioned by ZeRO-1 over the data-parallel degree of each parameter group: dense parameters
  over ``data``, routed experts over ``data / expert`` (their expert-data-parallel degree);
- activations per micro-batch per block: with activation checkpointing only the block input
  (2 bytes x seq x dim) is kept, plus one block's full working set during recompute; without it,
  ``34 x seq x dim`` bytes for attention and norms (Korthikanti et al. 2022, flash attention, no TP)
  plus ``8 x seq x ffn_width`` for the FFN, where ffn_width counts the experts a token uses;
- micro-batches in flight on stage s: 1F1B ``min(pipeline - s, m)``, GPipe ``m``,
  DualPipe ``pipeline + 1`` with two copies of the weights (V3 report, section 3.2.1);
- with fp8 precision, activations are cached at 1 byte instead of 2 (V3 report section 3.3.2);
- the last stage computes the loss in chunks of ``LOSS_CHUNK_TOKENS`` tokens, holding fp32 logits
  and their gradient for one chunk (the runtime's head does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.plan.params import block_params, embedding_params, head_params, is_moe_block, mtp_module_params
from orchestrator.plan.partition import StageLayers

BYTES_WEIGHT = {"bf16": 2, "fp8": 2, "fp32": 4}
BYTES_GRADIENT = {"bf16": 4, "fp8": 4, "fp32": 4}
BYTES_OPTIMIZER = {"bf16": 12, "fp8": 12, "fp32": 8}
GIB = 1024**3
LOSS_CHUNK_TOKENS = 4096
ACTIVATION_SCALE = {"bf16": 1.0, "fp8": 0.5, "fp32": 2.0}


@dataclass(frozen=True)
class StageMemory:
    stage: int
    params_per_device: int
    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "params_per_device": self.params_per_device,
            "weights_gb": self.weights / GIB,
            "gradients_gb": self.gradients / GIB,
            "optimizer_gb": self.optimizer / GIB,
            "activations_gb": self.activations / GIB,
            "total_gb": self.total / GIB,
        }


@dataclass(frozen=True)
class StageParams:
    """Parameters of one stage: replicated (dense) and routed-expert, per device and in all."""

    stage: int
    dense: int  # replicated on every data-parallel rank of the stage
    experts_total: int  # all routed experts of the stage
    experts_per_device: int  # this device's expert shard

    @property
    def per_device(self) -> int:
        return self.dense + self.experts_per_device

    @property
    def total(self) -> int:
        return self.dense + self.experts_total


def stage_params(model, layers: StageLayers, expert_parallel: int, tensor: int = 1) -> StageParams:
    dense = experts = 0
    if layers.has_embedding:
        dense += embedding_params(model)
    for i in layers.blocks:
        b = block_params(model, is_moe_block(model, i))
        dense += b.non_expert
        experts += b.routed_experts
    if layers.has_head:
        dense += head_params(model)
    if layers.mtp_modules:
        mtp_block = block_params(model, model.n_routed_experts > 0)
        dense += layers.mtp_modules * (mtp_module_params(model) - mtp_block.routed_experts)
        experts += layers.mtp_modules * mtp_block.routed_experts
        if not layers.has_embedding:
            dense += embedding_params(model)  # the MTP modules' tied copy of the embedding
    return StageParams(layers.stage, dense // tensor, experts, experts // expert_parallel // tensor)


def in_flight_micro_batches(schedule: str, pipeline: int, stage: int, micro_batches: int) -> int:
    if schedule == "gpipe":
        return micro_batches
    if schedule == "dualpipe":
        return min(pipeline + 1, micro_batches)
    return min(pipeline - stage, micro_batches)


def block_activation_bytes(model, index: int, tokens: int, checkpointing: bool) -> tuple[float, float]:
    """(bytes kept per micro-batch, bytes of one block's full working set)."""
    moe = is_moe_block(model, index)
    ffn_width = (model.n_activated_experts + model.n_shared_experts) * model.moe_inter_dim if moe else model.inter_dim
    full = tokens * (34 * model.dim + 8 * ffn_width)
    kept = 2 * tokens * model.dim if checkpointing else full
    return kept, full


def stage_memory(
    model,
    spec_parallel,
    precision: str,
    layers: StageLayers,
    params: StageParams,
    data: int,
    seq_len: int,
    micro_batches: int,
) -> StageMemory:
    p = spec_parallel
    wbytes = BYTES_WEIGHT[precision]
    copies = 2 if p.schedule == "dualpipe" else 1
    weights = params.per_device * wbytes * copies
    gradients = params.per_device * BYTES_GRADIENT[precision]
    expert_dp = max(1, data // p.expert)
    optimizer = BYTES_OPTIMIZER[precision] * (params.dense / data + params.experts_per_device / expert_dp)
    tokens = seq_len * p.micro_batch_size
    kept_total, full_max = 0.0, 0.0
    blocks = list(layers.blocks) + [model.n_layers - 1] * layers.mtp_modules
    for i in blocks:
        kept, full = block_activation_bytes(model, i, tokens, p.activation_checkpointing)
        kept_total += kept
        full_max = max(full_max, full)
    in_flight = in_flight_micro_batches(p.schedule, p.pipeline, layers.stage, micro_batches)
    activations = kept_total * in_flight + (full_max if p.activation_checkpointing else 0.0)
    activations *= ACTIVATION_SCALE[precision]
    if layers.has_head:
        activations += 2 * 4 * min(tokens, LOSS_CHUNK_TOKENS) * model.vocab_size
    return StageMemory(layers.stage, params.per_device, weights, gradients, optimizer, activations)
