"""Build the DeepSpeed pipeline engine for one rank from the plan (the plan is the contract).

- Topology: ``PipeDataParallelTopology(pipeline, data)``, whose rank order is the planner's mesh.
- Partition: the planner's blocks per stage, not DeepSpeed's own partitioning.
- Experts: this rank builds only the routed experts of its expert-parallel shard
  (``placement.expert_rank`` from the plan).
- The MTP modules on the last stage embed future tokens with a copy of the embedding tied to
  stage 0's (``TiedLayerSpec``): DeepSpeed syncs its weights and sums its gradients across stages.
"""

from __future__ import annotations

import deepspeed
import torch
from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

from orchestrator.errors import OrchError
from orchestrator.plan.mesh import RankPlacement
from orchestrator.plan.planner import Plan
from orchestrator.spec.schema import JobSpec
from orchestrator.train import collectives, stage_backward
from orchestrator.train.activations import checkpoint_layers
from orchestrator.train.float64 import keep_float64, needs_float64
from orchestrator.train.model import BlockLayer, EmbeddingLayer, LanguageModelLoss, OutputLayer, embed_future_tokens
from orchestrator.train.moe import DeepSeekMoE
from orchestrator.train.support import check_runnable

LOSS_PARTS = ("lm_loss", "mtp_loss", "balance_loss")


class RuntimeLayoutError(OrchError):
    """The running gang does not match the plan (world size, schedule, tensor parallelism)."""


class PlannedPipelineModule(PipelineModule):
    """A PipelineModule whose stage boundaries are the planner's, reporting the loss components."""

    def __init__(self, layers, stage_starts: list[int], loss_fn: LanguageModelLoss, topology, checkpointing: bool):
        self._planned_parts = stage_starts
        self._loss = loss_fn
        # per block, with DeepSpeed's checkpoint (orchestrator.train.activations): only a block's input is kept
        super().__init__(
            layers=layers,
            topology=topology,
            loss_fn=loss_fn,
            partition_method="planned",
            activation_checkpoint_interval=1 if checkpointing else 0,
            activation_checkpoint_func=checkpoint_layers,
            checkpointable_layers=["BlockLayer"],
        )

    def _partition_layers(self, method: str = "planned") -> None:
        self.parts = list(self._planned_parts)
        stage = self._topo.get_coord(self.global_rank).pipe
        self._set_bounds(start=self.parts[stage], stop=self.parts[stage + 1])

    def get_additional_losses(self):
        """The same keys on every stage: DeepSpeed sizes its loss broadcast by them."""
        return {name: self._loss.last.values.get(name, torch.zeros(())) for name in LOSS_PARTS}

    def moe_layers(self) -> list[DeepSeekMoE]:
        return [m for m in self.modules() if isinstance(m, DeepSeekMoE)]


def layer_specs(spec: JobSpec, plan: Plan, placement: RankPlacement) -> tuple[list, list[int]]:
    """The pipeline's layer specs and each stage's first layer index."""
    m, seed = spec.model, spec.training.seed
    balance = spec.training.balance
    ep, ep_rank = plan.mesh.expert, placement.expert_rank
    layers: list = [TiedLayerSpec("embed", EmbeddingLayer, m, seed, tied_weight_attr=["embed.weight"])]
    layers += [LayerSpec(BlockLayer, m, balance, i, ep, ep_rank, seed) for i in range(m.n_layers)]
    if m.mtp_depth:
        layers.append(
            TiedLayerSpec(
                "embed", EmbeddingLayer, m, seed, forward_fn=embed_future_tokens, tied_weight_attr=["embed.weight"]
            )
        )
    layers.append(LayerSpec(OutputLayer, m, balance, ep, ep_rank, seed, spec.parallelism.activation_checkpointing))
    starts = [0]
    for stage in plan.stages[:-1]:
        starts.append(1 + stage.last_block + 1)  # the embedding, then blocks 0..last_block
    starts.append(len(layers))
    return layers, starts


def check_layout(plan: Plan, world_size: int) -> None:
    mesh = plan.mesh
    if world_size != mesh.world_size:
        raise RuntimeLayoutError(f"the gang has {world_size} workers but the plan needs {mesh.world_size}")
    check_runnable(plan.spec)


def deepspeed_config(spec: JobSpec, plan: Plan, first_batch: int, use_bf16: bool) -> dict:
    """bf16 runs keep fp32 master weights and accumulate gradients in fp32: DeepSpeed's
    ``BF16_Optimizer`` (``deepspeed/runtime/engine.py`` ``_do_optimizer_sanity_check``, 0.19.8:
    bf16 model + ``grad_accum_dtype`` fp32 + ZeRO stage 1 -> BFLOAT16 wrapper; the pipeline engine
    with bf16 gradients accumulated in bf16 is what it warns about)."""
    opt = spec.training.optimizer
    mbs = spec.parallelism.micro_batch_size
    precision = (
        {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"}}
        if use_bf16
        else {"bf16": {"enabled": False}}
    )
    return {
        "train_batch_size": first_batch,
        "train_micro_batch_size_per_gpu": mbs,
        "gradient_accumulation_steps": first_batch // (mbs * plan.mesh.data),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": spec.training.lr_schedule.peak,
                "betas": list(opt.betas),
                "eps": opt.eps,
                "weight_decay": opt.weight_decay,
                "torch_adam": True,
            },
        },
        "gradient_clipping": opt.grad_clip,
        "zero_optimization": {"stage": spec.parallelism.zero_stage},
        **precision,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "dump_state": False,
    }


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (norm gains and the like are left alone)."""
    decay = [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in module.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay}]
    if other:
        groups.append({"name": "no_decay", "params": other, "weight_decay": 0.0})
    return groups


def build_engine(spec: JobSpec, plan: Plan, first_batch: int):
    """Create this rank's DeepSpeed PipelineEngine (torch.distributed must be initialised)."""
    rank, world = collectives.rank(), collectives.world_size()
    check_layout(plan, world)
    placement = plan.mesh.placement(rank)
    topology = PipeDataParallelTopology(num_pp=plan.mesh.pipeline, num_dp=plan.mesh.data)
    coord = topology.get_coord(rank)
    if (coord.pipe, coord.data) != (placement.stage, placement.data_rank):
        raise RuntimeLayoutError(f"rank {rank}: DeepSpeed places it at {coord}, the plan at {placement}")
    layers, starts = layer_specs(spec, plan, placement)
    loss_fn = LanguageModelLoss(spec.training.mtp_loss_weight)
    module = PlannedPipelineModule(layers, starts, loss_fn, topology, spec.parallelism.activation_checkpointing)
    use_bf16 = spec.training.precision == "bf16"
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=param_groups(module, spec.training.optimizer.weight_decay),
        config=deepspeed_config(spec, plan, first_batch, use_bf16),
    )
    stage_backward.install(engine)  # one backward per micro-batch, not one per sent tensor
    if needs_float64(module):  # the equivalence test's precision: DeepSpeed would keep fp32 masters
        keep_float64(engine.optimizer)
    for layer in module.moe_layers():
        got = collectives.group_ranks(layer.ep_group) if layer.ep_group else [rank]
        want = plan.mesh.expert_group(placement.stage, placement.data_rank)
        if got != want:
            raise RuntimeLayoutError(f"rank {rank}: DeepSpeed's expert group {got} differs from the plan's {want}")
    return engine, module, placement
