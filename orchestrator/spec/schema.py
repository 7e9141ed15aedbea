"""The typed job spec: one YAML file describes a whole pretraining run.

Field names of ``model`` follow DeepSeek's ``config_671B.json`` so real configs paste in.
Every model forbids unknown keys (typos are errors, with a did-you-mean hint added by the
loader). Checks that involve only one section live here; checks that involve the layout of
the job over devices (divisibility, memory) live in the planner, which reports the numbers.
"""

from __future__ import annotations

import re
from typing import Literal, Union
from urllib.parse import urlsplit

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
    No number may be ``.inf`` or ``.nan``, and every number has an upper bound far beyond any real run
    (the bounds are in docs/spec.md): an absurd value is a typo, not a plan.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # the S3 bucket naming rules
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def check_storage_uri(value: str) -> str:
    """``s3://bucket/prefix``, ``file:///abs/path`` or a relative path under ORCH_HOME; no ``..`` that
    would climb out of ORCH_HOME, no spaces or control characters."""
    if not value.strip():
        raise ValueError("must not be empty")
    if _CONTROL.search(value):
        raise ValueError("must not contain spaces or control characters")
    if "://" in value and not value.startswith(("s3://", "file://")):
        raise ValueError("scheme must be s3:// or file://")
    if value.startswith("s3://"):
        bucket = value[len("s3://") :].split("/", 1)[0]
        if not bucket:
            raise ValueError("s3:// URI needs a bucket: s3://bucket/prefix")
        if not _S3_BUCKET.match(bucket):
            raise ValueError("the bucket name must be 3-63 lowercase letters, digits, dots or hyphens")
    elif value.startswith("file://") and not value[len("file://") :].startswith("/"):
        raise ValueError("a file:// URI needs an absolute path: file:///path")
    if ".." in value.split("://", 1)[-1].split("/"):
        raise ValueError("must not contain '..' path segments")
    return value


def check_http_url(value: str) -> str:
    """An http(s) URL with a host, and nothing that could smuggle credentials or a second request."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://s3.example.com")
    if _CONTROL.search(value) or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must be scheme://host[:port][/path]: no credentials, spaces, query or fragment")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise ValueError("the port must be 1-65535") from None
    return value


# --------------------------------------------------------------------------- model


class ModelSpec(StrictModel):
    """DeepSeek-V3-style architecture (MLA attention, DeepSeekMoE FFN, multi-token prediction)."""

    vocab_size: int = Field(gt=0, le=10_000_000)
    dim: int = Field(gt=0, le=1_000_000, description="hidden size")
    n_layers: int = Field(gt=0, le=10_000, description="transformer blocks")
    n_dense_layers: int = Field(ge=0, le=10_000, description="the first blocks use a dense FFN")
    inter_dim: int = Field(gt=0, le=10_000_000, description="dense FFN size")
    moe_inter_dim: int = Field(gt=0, le=10_000_000, description="expert FFN size")
    n_heads: int = Field(gt=0, le=100_000)
    q_lora_rank: int = Field(ge=0, le=1_000_000, description="MLA query compression rank; 0 means none")
    kv_lora_rank: int = Field(gt=0, le=1_000_000, description="MLA key/value compression rank")
    qk_nope_head_dim: int = Field(gt=0, le=100_000)
    qk_rope_head_dim: int = Field(gt=0, le=100_000, description="decoupled RoPE dimension; must be even")
    v_head_dim: int = Field(gt=0, le=100_000)
    n_routed_experts: int = Field(ge=1, le=1_000_000)
    n_shared_experts: int = Field(ge=0, le=10_000)
    n_activated_experts: int = Field(ge=1, le=1_000_000, description="routed experts per token (top-k)")
    n_expert_groups: int = Field(default=1, ge=1, le=1_000_000, description="groups for node-limited routing")
    n_limited_groups: int = Field(default=1, ge=1, le=1_000_000, description="groups a token may use")
    score_func: Literal["sigmoid", "softmax"] = "softmax"
    route_scale: float = Field(default=1.0, gt=0, le=1e6)
    mtp_depth: int = Field(default=0, ge=0, le=8, description="multi-token prediction modules")
    rope_theta: float = Field(default=10000.0, gt=0, le=1e12)
    norm_eps: float = Field(default=1e-6, gt=0, lt=1)
    # YaRN context extension (config_671B.json); applied when a phase's seq_len exceeds original_seq_len
    original_seq_len: int = Field(
        default=4096, ge=1, le=10_000_000, description="pretraining context; longer phases use YaRN"
    )
    rope_factor: float = Field(
        default=40.0, ge=1, le=1e6, description="YaRN scale s: long-wavelength RoPE dims are divided by it"
    )
    beta_fast: float = Field(
        default=32.0, gt=0, le=1e6, description="YaRN: dims rotating more often than this keep their frequency"
    )
    beta_slow: float = Field(
        default=1.0, gt=0, le=1e6, description="YaRN: dims rotating less often than this are fully interpolated"
    )
    mscale: float = Field(
        default=1.0, ge=0, le=100, description="YaRN attention temperature: scale x (0.1 mscale ln s + 1)^2"
    )
    init_std: float = Field(
        default=0.006, gt=0, le=1, description="standard deviation of every weight matrix at initialisation (V3: 0.006)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        problems = []
        if self.n_dense_layers > self.n_layers:
            problems.append(
                (
                    "n_dense_layers",
                    f"n_dense_layers ({self.n_dense_layers}) exceeds n_layers "
                    f"({self.n_layers}); use at most {self.n_layers}",
                )
            )
        if self.qk_rope_head_dim % 2:
            problems.append(
                ("qk_rope_head_dim", f"qk_rope_head_dim ({self.qk_rope_head_dim}) must be even for rotary pairs")
            )
        if self.n_activated_experts > self.n_routed_experts:
            problems.append(
                (
                    "n_activated_experts",
                    f"n_activated_experts ({self.n_activated_experts}) exceeds "
                    f"n_routed_experts ({self.n_routed_experts})",
                )
            )
        if self.n_routed_experts % self.n_expert_groups:
            problems.append(
                (
                    "n_expert_groups",
                    f"n_routed_experts ({self.n_routed_experts}) is not divisible by "
                    f"n_expert_groups ({self.n_expert_groups}); use a divisor",
                )
            )
        if self.n_limited_groups > self.n_expert_groups:
            problems.append(
                (
                    "n_limited_groups",
                    f"n_limited_groups ({self.n_limited_groups}) exceeds n_expert_groups ({self.n_expert_groups})",
                )
            )
        elif self.n_routed_experts % self.n_expert_groups == 0 and self.n_activated_experts <= self.n_routed_experts:
            reachable = self.n_limited_groups * (self.n_routed_experts // self.n_expert_groups)
            if self.n_activated_experts > reachable:
                problems.append(
                    (
                        "n_activated_experts",
                        f"n_activated_experts ({self.n_activated_experts}) exceeds "
                        f"the {reachable} experts reachable in n_limited_groups ({self.n_limited_groups}) "
                        f"groups of {self.n_routed_experts // self.n_expert_groups}; raise n_limited_groups",
                    )
                )
        fail(problems)
        return self


# --------------------------------------------------------------------------- parallelism


class ParallelismSpec(StrictModel):
    """How the job is laid out: PP x DP (x TP), with expert parallelism carved out of DP."""

    pipeline: int = Field(ge=1, le=100_000, description="pipeline stages")
    expert: int = Field(ge=1, le=10_000_000, description="expert-parallel ranks (divides the data-parallel degree)")
    tensor: int = Field(default=1, ge=1, le=1024, description="tensor parallelism (1: none, as in DeepSeek-V3)")
    data: Union[int, Literal["auto"]] = Field(
        default="auto", description="data-parallel degree; auto = world / (pipeline x tensor)"
    )
    zero_stage: Literal[0, 1] = Field(default=1, description="ZeRO stage for data parallelism")
    schedule: Literal["1f1b", "dualpipe", "gpipe"] = "1f1b"
    micro_batch_size: int = Field(default=1, ge=1, le=1_000_000, description="sequences per micro-batch")
    activation_checkpointing: bool = Field(default=True, description="keep only block inputs")
    layer_partition: Union[Literal["balanced"], list[int]] = Field(
        default="balanced", description="blocks per stage, or balanced by compute"
    )

    @field_validator("data")
    @classmethod
    def _data_positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'auto'")
        if isinstance(value, int) and value > 100_000_000:
            raise ValueError("must be at most 100000000 (or 'auto')")
        return value


# --------------------------------------------------------------------------- resources


class AcceleratorSpec(StrictModel):
    """The device type and its peak rates, which turn FLOPs into time."""

    type: str = Field(min_length=1, max_length=64, description="e.g. H800, H100, cpu")
    peak_bf16_tflops: float = Field(gt=0, le=1e6)
    peak_fp8_tflops: float = Field(default=0.0, ge=0, le=1e6)
    memory_gb: float = Field(gt=0, le=1e5)


class PoolSpec(StrictModel):
    """A node pool: on-demand, spot (preemptible) or spare capacity, with its price."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["on-demand", "spot", "spare"] = "on-demand"
    nodes: int = Field(ge=0, le=1_000_000)
    price_per_gpu_hour: Union[float, None] = Field(default=None, ge=0, le=10_000, description="default: cost.price")
    interruptions_per_node_day: float = Field(default=0.0, ge=0, le=10_000, description="expected, for spot pools")
    notice_seconds: Union[int, None] = Field(default=None, ge=0, le=86_400, description="interruption notice window")


class ResourcesSpec(StrictModel):
    accelerator: AcceleratorSpec
    gpus_per_node: int = Field(ge=1, le=1024)
    nodes: int = Field(ge=1, le=1_000_000, description="nodes the job uses (world = nodes x gpus_per_node)")
    pools: list[PoolSpec] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _pools(self) -> "ResourcesSpec":
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems = []
        if dupes:
            problems.append(("pools", f"pool names must be unique; repeated: {', '.join(dupes)}"))
        usable = sum(p.nodes for p in self.pools if p.kind != "spare")
        if usable < self.nodes:
            problems.append(
                (
                    "nodes",
                    f"pools hold {usable} non-spare nodes but the job needs nodes={self.nodes}; "
                    "add nodes to a pool or lower resources.nodes",
                )
            )
        fail(problems)
        return self


# --------------------------------------------------------------------------- training


class BatchRamp(StrictModel):
    """Global batch in sequences, ramped linearly over the first ``ramp_tokens`` tokens."""

    start: int = Field(ge=1, le=1_000_000_000)
    end: int = Field(ge=1, le=1_000_000_000)
    ramp_tokens: float = Field(ge=0, le=1e18)

    @model_validator(mode="after")
    def _order(self) -> "BatchRamp":
        if self.end < self.start:
            fail([("end", f"end ({self.end}) is smaller than start ({self.start}); a ramp only grows")])
        return self


class LRStage(StrictModel):
    tokens: float = Field(gt=0, le=1e18)
    lr: float = Field(ge=0, le=1)


class LRScheduleSpec(StrictModel):
    """Warm-up in steps, then hold, cosine decay and constant tails measured in tokens (as in V3)."""

    peak: float = Field(gt=0, le=1)
    warmup_steps: int = Field(default=0, ge=0, le=1_000_000_000)
    hold_tokens: float = Field(default=0, ge=0, le=1e18, description="tokens at peak after warm-up")
    decay_tokens: float = Field(default=0, ge=0, le=1e18, description="cosine decay length in tokens")
    final: float = Field(default=0.0, ge=0, le=1, description="learning rate at the end of the decay")
    tail: list[LRStage] = Field(default_factory=list, max_length=1000, description="constant stages after the decay")


class OptimizerSpec(StrictModel):
    name: Literal["adamw"] = "adamw"
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2)
    eps: float = Field(default=1e-8, gt=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0, le=100)
    grad_clip: float = Field(default=1.0, gt=0, le=1e6)

    @field_validator("betas")
    @classmethod
    def _betas(cls, value):
        if not all(0 <= b < 1 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class ScheduledValue(StrictModel):
    """A value that applies once ``after_tokens`` tokens (counted over all phases) are trained."""

    after_tokens: float = Field(ge=0, le=1e18, description="tokens trained before the value applies")
    value: float = Field(ge=0, le=100, description="the value from then on")


def scheduled(base: float, changes: list[ScheduledValue], tokens: float) -> float:
    """The value in force after ``tokens`` tokens: the latest change reached, else ``base``."""
    value = base
    for change in sorted(changes, key=lambda c: c.after_tokens):
        if tokens >= change.after_tokens:
            value = change.value
    return value


class BalanceSpec(StrictModel):
    """DeepSeek-V3's auxiliary-loss-free balancing plus the small sequence-wise balance loss."""

    bias_update_speed: float = Field(default=0.001, ge=0, le=1)
    bias_update_speed_schedule: list[ScheduledValue] = Field(
        default_factory=list,
        max_length=100,
        description="later bias update speeds by tokens trained (V3: 0 after 14.3T tokens, i.e. for the last 500B)",
    )
    sequence_aux_loss_weight: float = Field(default=0.0001, ge=0, le=100)


class TrainingSpec(StrictModel):
    optimizer: OptimizerSpec = OptimizerSpec()
    lr_schedule: LRScheduleSpec
    expected_mfu: float = Field(gt=0, le=1, description="model FLOPs utilisation the plan assumes")
    precision: Literal["bf16", "fp8", "fp32"] = "bf16"
    balance: BalanceSpec = BalanceSpec()
    mtp_loss_weight: float = Field(default=0.3, ge=0, le=100)
    mtp_loss_weight_schedule: list[ScheduledValue] = Field(
        default_factory=list,
        max_length=100,
        description="later MTP loss weights by tokens trained (V3: 0.1 after 10T tokens)",
    )
    seed: int = Field(default=1234, ge=0, le=2**32 - 1)


class PhaseSpec(StrictModel):
    """One phase of the run; its length is given in tokens or in steps (exactly one of them)."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9_][a-z0-9_-]*$")
    seq_len: int = Field(ge=1, le=10_000_000)
    global_batch: Union[int, BatchRamp] = Field(description="sequences per step, or a ramp")
    tokens: Union[float, None] = Field(default=None, gt=0, le=1e18)
    steps: Union[int, None] = Field(default=None, gt=0, le=1_000_000_000)
    expected_mfu: Union[float, None] = Field(default=None, gt=0, le=1, description="default: training's")

    @field_validator("global_batch")
    @classmethod
    def _batch_positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 sequence")
        if isinstance(value, int) and value > 1_000_000_000:
            raise ValueError("must be at most 1000000000 sequences")
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
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    branching: int = Field(default=4, ge=1, le=1_000_000, description="successor tokens per token")
    concentration: float = Field(default=1.0, gt=0, le=1e6, description="Dirichlet concentration of transitions")


class ShardData(StrictModel):
    """Memory-mapped token shards (uint16/uint32 .bin files) from a local path or s3:// URI."""

    source: Literal["shards"]
    path: str = Field(min_length=1, max_length=4096)
    dtype: Literal["uint16", "uint32"] = "uint16"


class CheckpointInterval(StrictModel):
    steps: Union[int, None] = Field(default=None, ge=1, le=1_000_000_000)
    minutes: Union[float, None] = Field(default=None, gt=0, le=525_600, description="at most a year")

    @model_validator(mode="after")
    def _one(self) -> "CheckpointInterval":
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give exactly one of steps or minutes (or write interval: auto)")
        return self


class RetentionSpec(StrictModel):
    keep_last: int = Field(default=3, ge=1, le=100_000)
    keep_every: int = Field(default=0, ge=0, le=1_000_000_000, description="also keep every N-th step (0: none)")


class CheckpointSpec(StrictModel):
    uri: str = Field(
        max_length=2048, description="file:///path, s3://bucket/prefix, or a relative path under ORCH_HOME"
    )
    interval: Union[Literal["auto"], CheckpointInterval] = "auto"
    retention: RetentionSpec = RetentionSpec()
    s3_endpoint_url: Union[str, None] = Field(
        default=None, max_length=2048, description="http(s)://host[:port] of an S3-compatible store"
    )

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str) -> str:
        return check_storage_uri(value)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)


class RestartBudgetSpec(StrictModel):
    """How many restarts a job may use, as a rate: a 57-day run on 256 nodes loses a node every few
    hours (Meta: one failure per 7.9 h at 1,024 GPUs), so a lifetime count either fails a healthy run
    mid-way or is so large that it never stops anything. A sliding window counts what happens now.

    Infrastructure restarts (node loss, a node taken with a notice, checkpoint storage) and crashes of
    the job's own code have separate allowances: a crash loop stops after ``crash_restarts`` even
    while node losses still have room."""

    restarts: int = Field(
        ge=0,
        le=100_000,
        description="infrastructure restarts (node loss, preemption on a notice, checkpoint "
        "storage) allowed within any window",
    )
    window_hours: float = Field(gt=0, le=24 * 366, description="the sliding window the counts are over, hours")
    crash_restarts: int = Field(
        default=0,
        ge=0,
        le=1_000,
        description="restarts after the job's own error within the window (0: a crash fails the job at once)",
    )


DEFAULT_MAX_RESTARTS = 3


class FaultToleranceSpec(StrictModel):
    max_restarts: Union[int, None] = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description=f"cap on all restarts over the job's life (unset: {DEFAULT_MAX_RESTARTS} without a "
        "restart_budget, no cap with one)",
    )
    restart_budget: Union[RestartBudgetSpec, None] = None
    spare_nodes: int = Field(default=0, ge=0, le=1_000_000)
    warm_restart: bool = Field(
        default=True,
        description="restart from warm state: each checkpoint shard also kept in a peer node's "
        "memory and read from there on resume (object storage stays the durable copy); "
        "false: every restart reads object storage",
    )

    @property
    def lifetime_restarts(self) -> int | None:
        """The cap on all restarts over the job's life (None: only the windowed budget limits them).
        Without a restart_budget this is the old lifetime count, 3 unless set."""
        if self.max_restarts is not None:
            return self.max_restarts
        return DEFAULT_MAX_RESTARTS if self.restart_budget is None else None


class StorageCostSpec(StrictModel):
    """Object-storage list prices; the defaults are Amazon S3 Standard's in us-east-1
    (https://aws.amazon.com/s3/pricing/, first 50 TB tier). Checkpoints and data reads are priced with them."""

    gb_month_usd: float = Field(default=0.023, ge=0, le=1000, description="storage, per GB-month (730 hours)")
    put_per_1000_usd: float = Field(default=0.005, ge=0, le=1000, description="PUT/COPY/POST/LIST requests, per 1,000")
    get_per_1000_usd: float = Field(default=0.0004, ge=0, le=1000, description="GET/SELECT requests, per 1,000")
    part_mb: float = Field(
        default=16.0, ge=5, le=5120, description="multipart part size, MiB (orch uploads 16; S3 allows 5 to 5,120)"
    )
    minimum_days: float = Field(
        default=0.0, ge=0, le=3650, description="early-deletion minimum (S3 Standard 0, Standard-IA 30, Glacier IR 90)"
    )
    transfer_per_gb_usd: float = Field(default=0.0, ge=0, le=1000, description="data transfer out (0 within a region)")
    write_gbps: Union[float, None] = Field(
        default=None, gt=0, le=1e6, description="sustained checkpoint write bandwidth; interval: auto stays within it"
    )


class CostSpec(StrictModel):
    price_per_gpu_hour: float = Field(ge=0, le=10_000)
    storage: StorageCostSpec = StorageCostSpec()
    reference: Literal["deepseek-v3", "none"] = "deepseek-v3"
    budget_gpu_hours: Union[float, None] = Field(default=None, gt=0, le=1e12)
    budget_usd: Union[float, None] = Field(default=None, gt=0, le=1e15)
    forecast_alert: Literal["p50", "p90"] = Field(
        default="p50", description="forecast quantile that raises budget.forecast_over"
    )


# --------------------------------------------------------------------------- the job


class JobSpec(StrictModel):
    """A whole job. ``profiles`` are stripped by the loader before this model sees the data."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    team: str = Field(default="default", min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    priority: int = Field(default=0, ge=-1000, le=1000)
    model: ModelSpec
    parallelism: ParallelismSpec
    resources: ResourcesSpec
    training: TrainingSpec
    phases: list[PhaseSpec] = Field(min_length=1, max_length=1000)
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
