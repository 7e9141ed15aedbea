"""The typed job spec: one YAML file describes a whole pretraining run.

Field names of ``model`` follow DeepSeek's ``config_671B.json`` so real configs paste in.
Every model forbids unknown keys (typos are errors, with a did-you-mean hint added by the
loader). Checks that involve only one section live here; checks that involve the layout of
the job over devices (divisibility, memory) live in the planner, which reports the numbers.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

def fail(problems: list[tuple[str, str]]) -> None:
    """Raise the problems of a cross-field check, each tagged with the field it is about.

    The loader splits ``@field: message`` lines into separate problems with full paths, so a
    user sees ``model.n_dense_layers: ...`` rather than a message about the whole section.
    """
    if problems:
        raise ValueError("\n".join(f"@{field}: {message}" for field, message in problems))


class StrictModel(BaseModel):
    """Base for every spec section: unknown keys are errors and values are not coerced.

    Strict so that YAML's ``yes`` never becomes ``pipeline: 1`` and ``"16"`` is reported as a string.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------- model


class ModelSpec(StrictModel):
    """DeepSeek-V3-style architecture (MLA attention, DeepSeekMoE FFN, multi-token prediction)."""

    vocab_size: int = Field(gt=0, le=10_000_000)
    dim: int = Field(gt=0, le=1_000_000, description="hidden size")
    n_layers: int = Field(gt=0, le=10_000, description="transformer blocks")
    n_dense_layers: int = Field(ge=0, description="the first blocks use a dense FFN")
    inter_dim: int = Field(gt=0, description="dense FFN size")
    moe_inter_dim: int = Field(gt=0, description="expert FFN size")
    n_heads: int = Field(gt=0, le=100_000)
    q_lora_rank: int = Field(ge=0, description="MLA query compression rank; 0 means none")
    kv_lora_rank: int = Field(gt=0, description="MLA key/value compression rank")
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0, description="decoupled RoPE dimension; must be even")
    v_head_dim: int = Field(gt=0)
    n_routed_experts: int = Field(ge=1, le=1_000_000)
    n_shared_experts: int = Field(ge=0)
    n_activated_experts: int = Field(ge=1, description="routed experts per token (top-k)")
    n_expert_groups: int = Field(default=1, ge=1, description="groups for node-limited routing")
    n_limited_groups: int = Field(default=1, ge=1, description="groups a token may use")
    score_func: Literal["sigmoid", "softmax"] = "softmax"
    route_scale: float = Field(default=1.0, gt=0)
    mtp_depth: int = Field(default=0, ge=0, le=8, description="multi-token prediction modules")
    rope_theta: float = Field(default=10000.0, gt=0)
    norm_eps: float = Field(default=1e-6, gt=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        problems = []
        if self.n_dense_layers > self.n_layers:
            problems.append(("n_dense_layers", f"n_dense_layers ({self.n_dense_layers}) exceeds n_layers "
                             f"({self.n_layers}); use at most {self.n_layers}"))
        if self.qk_rope_head_dim % 2:
            problems.append(("qk_rope_head_dim", f"qk_rope_head_dim ({self.qk_rope_head_dim}) must be even for "
                             "rotary pairs"))
        if self.n_activated_experts > self.n_routed_experts:
            problems.append(("n_activated_experts", f"n_activated_experts ({self.n_activated_experts}) exceeds "
                             f"n_routed_experts ({self.n_routed_experts})"))
        if self.n_routed_experts % self.n_expert_groups:
            problems.append(("n_expert_groups", f"n_routed_experts ({self.n_routed_experts}) is not divisible by "
                             f"n_expert_groups ({self.n_expert_groups}); use a divisor"))
        if self.n_limited_groups > self.n_expert_groups:
            problems.append(("n_limited_groups", f"n_limited_groups ({self.n_limited_groups}) exceeds "
                             f"n_expert_groups ({self.n_expert_groups})"))
        elif self.n_routed_experts % self.n_expert_groups == 0 and self.n_activated_experts <= self.n_routed_experts:
            reachable = self.n_limited_groups * (self.n_routed_experts // self.n_expert_groups)
            if self.n_activated_experts > reachable:
                problems.append(("n_activated_experts", f"n_activated_experts ({self.n_activated_experts}) exceeds "
                                 f"the {reachable} experts reachable in n_limited_groups ({self.n_limited_groups}) "
                                 f"groups of {self.n_routed_experts // self.n_expert_groups}; raise n_limited_groups"))
        fail(problems)
        return self


# --------------------------------------------------------------------------- parallelism


class ParallelismSpec(StrictModel):
    """How the job is laid out: PP x DP (x TP), with expert parallelism carved out of DP."""

    pipeline: int = Field(ge=1, description="pipeline stages")
    expert: int = Field(ge=1, description="expert-parallel ranks (divides the data-parallel degree)")
    tensor: int = Field(default=1, ge=1, description="tensor parallelism (1: none, as in DeepSeek-V3)")
    data: Union[int, Literal["auto"]] = Field(
        default="auto", description="data-parallel degree; auto = world / (pipeline x tensor)"
    )
    zero_stage: Literal[0, 1] = Field(default=1, description="ZeRO stage for data parallelism")
    schedule: Literal["1f1b", "dualpipe", "gpipe"] = "1f1b"
    micro_batch_size: int = Field(default=1, ge=1, description="sequences per micro-batch")
    activation_checkpointing: bool = Field(default=True, description="keep only block inputs")
    layer_partition: Union[Literal["balanced"], list[int]] = Field(
        default="balanced", description="blocks per stage, or balanced by compute"
    )

    @field_validator("data")
    @classmethod
    def _data_positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'auto'")
        return value


# --------------------------------------------------------------------------- resources


class AcceleratorSpec(StrictModel):
    """The device type and its peak rates, which turn FLOPs into time."""

    type: str = Field(min_length=1, description="e.g. H800, H100, cpu")
    peak_bf16_tflops: float = Field(gt=0, le=1e6)
    peak_fp8_tflops: float = Field(default=0.0, ge=0, le=1e6)
    memory_gb: float = Field(gt=0, le=1e5)


class PoolSpec(StrictModel):
    """A node pool: on-demand, spot (preemptible) or spare capacity, with its price."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["on-demand", "spot", "spare"] = "on-demand"
    nodes: int = Field(ge=0, le=1_000_000)
    price_per_gpu_hour: Union[float, None] = Field(default=None, ge=0, description="default: cost.price")
    interruptions_per_node_day: float = Field(default=0.0, ge=0, description="expected, for spot pools")
    notice_seconds: Union[int, None] = Field(default=None, ge=0, description="interruption notice window")


class ResourcesSpec(StrictModel):
    accelerator: AcceleratorSpec
    gpus_per_node: int = Field(ge=1, le=1024)
    nodes: int = Field(ge=1, le=1_000_000, description="nodes the job uses (world = nodes x gpus_per_node)")
    pools: list[PoolSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _pools(self) -> "ResourcesSpec":
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems = []
        if dupes:
            problems.append(("pools", f"pool names must be unique; repeated: {', '.join(dupes)}"))
        usable = sum(p.nodes for p in self.pools if p.kind != "spare")
        if usable < self.nodes:
            problems.append(("nodes", f"pools hold {usable} non-spare nodes but the job needs nodes={self.nodes}; "
                             "add nodes to a pool or lower resources.nodes"))
        fail(problems)
        return self


# --------------------------------------------------------------------------- training


class BatchRamp(StrictModel):
    """Global batch in sequences, ramped linearly over the first ``ramp_tokens`` tokens."""

    start: int = Field(ge=1)
    end: int = Field(ge=1)
    ramp_tokens: float = Field(ge=0)

    @model_validator(mode="after")
    def _order(self) -> "BatchRamp":
        if self.end < self.start:
            fail([("end", f"end ({self.end}) is smaller than start ({self.start}); a ramp only grows")])
        return self


class LRStage(StrictModel):
    tokens: float = Field(gt=0)
    lr: float = Field(ge=0, le=1)


class LRScheduleSpec(StrictModel):
    """Warm-up in steps, then hold, cosine decay and constant tails measured in tokens (as in V3)."""

    peak: float = Field(gt=0, le=1)
    warmup_steps: int = Field(default=0, ge=0)
    hold_tokens: float = Field(default=0, ge=0, description="tokens at peak after warm-up")
    decay_tokens: float = Field(default=0, ge=0, description="cosine decay length in tokens")
    final: float = Field(default=0.0, ge=0, le=1, description="learning rate at the end of the decay")
    tail: list[LRStage] = Field(default_factory=list, description="constant stages after the decay")


class OptimizerSpec(StrictModel):
    name: Literal["adamw"] = "adamw"
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas(cls, value):
        if not all(0 <= b < 1 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class BalanceSpec(StrictModel):
    """DeepSeek-V3's auxiliary-loss-free balancing plus the small sequence-wise balance loss."""

    bias_update_speed: float = Field(default=0.001, ge=0)
    sequence_aux_loss_weight: float = Field(default=0.0001, ge=0)


class TrainingSpec(StrictModel):
    optimizer: OptimizerSpec = OptimizerSpec()
    lr_schedule: LRScheduleSpec
    expected_mfu: float = Field(gt=0, le=1, description="model FLOPs utilisation the plan assumes")
    precision: Literal["bf16", "fp8", "fp32"] = "bf16"
    balance: BalanceSpec = BalanceSpec()
    mtp_loss_weight: float = Field(default=0.3, ge=0)
    seed: int = Field(default=1234, ge=0)


class PhaseSpec(StrictModel):
    """One phase of the run; its length is given in tokens or in steps (exactly one of them)."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9_][a-z0-9_-]*$")
    seq_len: int = Field(ge=1, le=10_000_000)
    global_batch: Union[int, BatchRamp] = Field(description="sequences per step, or a ramp")
    tokens: Union[float, None] = Field(default=None, gt=0)
    steps: Union[int, None] = Field(default=None, gt=0)
    expected_mfu: Union[float, None] = Field(default=None, gt=0, le=1, description="default: training's")

    @field_validator("global_batch")
    @classmethod
    def _batch_positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 sequence")
        return value

    @model_validator(mode="after")
    def _length(self) -> "PhaseSpec":
        if (self.tokens is None) == (self.steps is None):
            raise ValueError("give exactly one of tokens or steps for the phase's length")
        if self.steps is not None and isinstance(self.global_batch, BatchRamp):
            raise ValueError("a batch ramp is defined in tokens; give the phase's length as tokens")
        return self


# --------------------------------------------------------------------------- data, checkpoints, faults, cost


class SyntheticData(StrictModel):
    """A seeded random Markov chain over the vocabulary: its entropy rate is the loss floor."""

    source: Literal["synthetic"]
    seed: int = Field(default=0, ge=0)
    branching: int = Field(default=4, ge=1, description="successor tokens per token")
    concentration: float = Field(default=1.0, gt=0, description="Dirichlet concentration of transitions")


class ShardData(StrictModel):
    """Memory-mapped token shards (uint16/uint32 .bin files) from a local path or s3:// URI."""

    source: Literal["shards"]
    path: str = Field(min_length=1)
    dtype: Literal["uint16", "uint32"] = "uint16"


class CheckpointInterval(StrictModel):
    steps: Union[int, None] = Field(default=None, ge=1)
    minutes: Union[float, None] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> "CheckpointInterval":
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give exactly one of steps or minutes (or write interval: auto)")
        return self


class RetentionSpec(StrictModel):
    keep_last: int = Field(default=3, ge=1)
    keep_every: int = Field(default=0, ge=0, description="also keep every N-th step (0: none)")


class CheckpointSpec(StrictModel):
    uri: str = Field(description="file:///path, s3://bucket/prefix, or a relative path under ORCH_HOME")
    interval: Union[Literal["auto"], CheckpointInterval] = "auto"
    retention: RetentionSpec = RetentionSpec()
    s3_endpoint_url: Union[str, None] = None

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError("scheme must be s3:// or file://")
        if value.startswith("s3://") and len(value) <= len("s3://"):
            raise ValueError("s3:// URI needs a bucket: s3://bucket/prefix")
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class FaultToleranceSpec(StrictModel):
    max_restarts: int = Field(default=3, ge=0)
    spare_nodes: int = Field(default=0, ge=0)


class CostSpec(StrictModel):
    price_per_gpu_hour: float = Field(ge=0, le=10_000)
    reference: Literal["deepseek-v3", "none"] = "deepseek-v3"
    budget_gpu_hours: Union[float, None] = Field(default=None, gt=0)
    budget_usd: Union[float, None] = Field(default=None, gt=0)


# --------------------------------------------------------------------------- the job


class JobSpec(StrictModel):
    """A whole job. ``profiles`` are stripped by the loader before this model sees the data."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    team: str = Field(default="default", min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    priority: int = Field(default=0, ge=-1000, le=1000)
    model: ModelSpec
    parallelism: ParallelismSpec
    resources: ResourcesSpec
    training: TrainingSpec
    phases: list[PhaseSpec] = Field(min_length=1)
    data: Union[SyntheticData, ShardData] = Field(discriminator="source")
    checkpoint: CheckpointSpec
    fault_tolerance: FaultToleranceSpec = FaultToleranceSpec()
    cost: CostSpec

    @model_validator(mode="after")
    def _unique_phases(self) -> "JobSpec":
        names = [p.name for p in self.phases]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            fail([("phases", f"phase names must be unique; repeated: {', '.join(dupes)}")])
        return self

    def pools_used(self) -> list[tuple[PoolSpec, int]]:
        """The non-spare pools the job's nodes come from, in spec order, with how many nodes each gives."""
        need, used = self.resources.nodes, []
        for pool in self.resources.pools:
            if pool.kind == "spare" or need <= 0:
                continue
            take = min(need, pool.nodes)
            used.append((pool, take))
            need -= take
        return used

    def pool_price(self, pool: PoolSpec) -> float:
        """A pool's price per device-hour, falling back to the job's default price."""
        return self.cost.price_per_gpu_hour if pool.price_per_gpu_hour is None else pool.price_per_gpu_hour
