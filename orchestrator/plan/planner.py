"""The planner: a pure function from a ``JobSpec`` to a ``Plan`` (mesh, layers, memory, FLOPs, cost).

No Ray, Kubernetes or torch. Every impossible layout is reported with its numbers as a
``PlanError`` listing all problems found, never an ``assert``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.errors import FieldProblem, PlanError
from orchestrator.plan import reference
from orchestrator.plan.flops import model_flops_per_token, mtp_flops
from orchestrator.plan.memory import GIB, StageMemory, StageParams, stage_memory, stage_params
from orchestrator.plan.mesh import Mesh
from orchestrator.plan.params import ModelParams, model_params
from orchestrator.plan.partition import StageLayers, balanced_counts, stage_layers_from_counts
from orchestrator.plan.schedule import BatchSchedule, phase_tokens
from orchestrator.spec.schema import BatchRamp, JobSpec, PhaseSpec


@dataclass(frozen=True)
class PhasePlan:
    name: str
    tokens: float
    seq_len: int
    steps: int
    batch_start: int
    batch_end: int
    flops_per_token: float
    mfu: float
    step_seconds: float  # at the final batch size
    gpu_hours: float
    cost_usd: float
    days: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Plan:
    spec: JobSpec
    mesh: Mesh
    stages: list[StageLayers]
    stage_params: list[StageParams]
    stage_memory: list[StageMemory]
    params: ModelParams
    flops_per_token: float  # first phase's sequence length
    mtp_flops_per_token: float
    phases: list[PhasePlan]
    price_per_gpu_hour: float  # blended over the pools the job runs on
    warnings: list[str] = field(default_factory=list)

    @property
    def total_gpu_hours(self) -> float:
        return sum(p.gpu_hours for p in self.phases)

    @property
    def total_cost_usd(self) -> float:
        return sum(p.cost_usd for p in self.phases)

    @property
    def total_days(self) -> float:
        return sum(p.days for p in self.phases)

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def _reference_json(self) -> dict | None:
        if self.spec.cost.reference == "none":
            return None
        summary = reference.reference_summary()
        summary["comparison"] = reference.compare_phases({p.name: p.gpu_hours for p in self.phases})
        return summary

    def worst_memory(self) -> StageMemory:
        return max(self.stage_memory, key=lambda m: m.total)

    def to_json(self, include_ranks: bool = True) -> dict:
        """The JSON contract other tools and tests read (documented in docs/plan.md)."""
        mesh = self.mesh
        worst = self.worst_memory()
        out = {
            "job": self.spec.name,
            "world_size": mesh.world_size,
            "nodes": mesh.nodes,
            "devices_per_node": mesh.devices_per_node,
            "accelerator": self.spec.resources.accelerator.type,
            "parallelism": {
                "pipeline": mesh.pipeline,
                "expert": mesh.expert,
                "data": mesh.data,
                "tensor": mesh.tensor,
                "expert_data": mesh.expert_data,
                "schedule": self.spec.parallelism.schedule,
                "zero_stage": self.spec.parallelism.zero_stage,
                "expert_group_nodes": mesh.expert_group_nodes(),
            },
            "stages": [
                {
                    "stage": s.stage,
                    "layers": s.layer_names(),
                    "blocks": s.blocks,
                    "nodes": mesh.stage_nodes(s.stage),
                    "params": p.total,
                    "params_per_device": p.per_device,
                }
                for s, p in zip(self.stages, self.stage_params)
            ],
            "params": self.params.as_dict(),
            "memory_per_gpu": {
                "worst_stage": worst.stage,
                "total_gb": worst.total / GIB,
                "limit_gb": self.spec.resources.accelerator.memory_gb,
                "by_stage": [m.as_dict() for m in self.stage_memory],
            },
            "flops_per_token": self.flops_per_token,
            "mtp_flops_per_token": self.mtp_flops_per_token,
            "phases": [p.as_dict() for p in self.phases],
            "total": {
                "steps": self.total_steps,
                "gpu_hours": self.total_gpu_hours,
                "cost_usd": self.total_cost_usd,
                "days": self.total_days,
            },
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "reference": self._reference_json(),
            "warnings": list(self.warnings),
        }
        if include_ranks:
            out["ranks"] = [p.as_dict() for p in mesh.placements()]
        return out


# --------------------------------------------------------------------------- checks


def _mesh_problems(spec: JobSpec) -> tuple[Mesh | None, list[FieldProblem]]:
    par, res, model = spec.parallelism, spec.resources, spec.model
    problems: list[FieldProblem] = []
    world = res.nodes * res.gpus_per_node
    model_parallel = par.pipeline * par.tensor
    if world % model_parallel:
        problems.append(
            FieldProblem(
                "parallelism.pipeline",
                f"world size {world} ({res.nodes} nodes x {res.gpus_per_node}) is not divisible by "
                f"pipeline x tensor = {par.pipeline} x {par.tensor} = {model_parallel}",
                par.pipeline,
                fix=f"choose pipeline x tensor dividing {world}, or change resources.nodes",
            )
        )
        return None, problems
    data = world // model_parallel
    if par.data != "auto" and par.data != data:
        problems.append(
            FieldProblem(
                "parallelism.data",
                f"world size {world} = pipeline {par.pipeline} x data {data} x tensor {par.tensor}, "
                f"not data {par.data}",
                par.data,
                fix=f"set parallelism.data to {data} or auto",
            )
        )
    if par.pipeline > model.n_layers:
        problems.append(
            FieldProblem(
                "parallelism.pipeline",
                f"{par.pipeline} stages for {model.n_layers} blocks; each stage needs a block",
                par.pipeline,
                fix=f"use at most {model.n_layers} stages",
            )
        )
    if data % par.expert:
        problems.append(
            FieldProblem(
                "parallelism.expert",
                f"expert parallelism {par.expert} must divide the data-parallel degree {data} "
                f"(world {world} / pipeline {par.pipeline} / tensor {par.tensor})",
                par.expert,
                fix=f"choose a divisor of {data}",
            )
        )
    if model.n_routed_experts % par.expert:
        problems.append(
            FieldProblem(
                "parallelism.expert",
                f"n_routed_experts ({model.n_routed_experts}) is not divisible by expert parallelism {par.expert}",
                par.expert,
                fix=f"choose a divisor of {model.n_routed_experts}",
            )
        )
    if model.n_heads % par.tensor:
        problems.append(
            FieldProblem(
                "parallelism.tensor",
                f"n_heads ({model.n_heads}) is not divisible by tensor {par.tensor}",
                par.tensor,
                fix="choose a divisor of n_heads",
            )
        )
    if isinstance(par.layer_partition, list):
        counts = par.layer_partition
        if len(counts) != par.pipeline or sum(counts) != model.n_layers or min(counts, default=0) < 1:
            problems.append(
                FieldProblem(
                    "parallelism.layer_partition",
                    f"{len(counts)} entries summing to {sum(counts)}; need {par.pipeline} entries (one per stage), "
                    f"each at least 1, summing to n_layers {model.n_layers}",
                    counts,
                    fix="fix the list or write 'balanced'",
                )
            )
    if problems:
        return None, problems
    mesh = Mesh(par.pipeline, data, par.expert, par.tensor, res.gpus_per_node)
    problems += _routing_problems(spec, mesh)
    return mesh, problems


def _routing_problems(spec: JobSpec, mesh: Mesh) -> list[FieldProblem]:
    """Node-limited routing assumes each routing group lives on one node of the EP group."""
    model = spec.model
    if model.n_expert_groups <= 1 or model.n_limited_groups >= model.n_expert_groups:
        return []
    span = mesh.expert_group_nodes()
    if span > model.n_expert_groups or model.n_expert_groups % span:
        return [
            FieldProblem(
                "parallelism.expert",
                f"the expert-parallel group of {mesh.expert} ranks spans {span} nodes, but node-limited routing "
                f"has n_expert_groups={model.n_expert_groups} (n_limited_groups={model.n_limited_groups}); "
                f"groups must map whole onto nodes, so the span must divide {model.n_expert_groups}",
                mesh.expert,
                fix=f"use expert <= {model.n_expert_groups * mesh.devices_per_node} with a node span dividing "
                f"{model.n_expert_groups}, or change model.n_expert_groups",
            )
        ]
    return []


def _batch_problems(spec: JobSpec, mesh: Mesh) -> tuple[list[FieldProblem], list[str]]:
    par = spec.parallelism
    per_step = mesh.data * par.micro_batch_size
    problems, warnings = [], []
    for i, phase in enumerate(spec.phases):
        batch = phase.global_batch
        values = [batch.start, batch.end] if isinstance(batch, BatchRamp) else [batch]
        where = f"phases.{i}.global_batch"
        for value in values:
            if value % per_step:
                problems.append(
                    FieldProblem(
                        where,
                        f"{value} sequences is not divisible by data-parallel {mesh.data} x micro-batch "
                        f"{par.micro_batch_size} = {per_step}",
                        value,
                        fix=f"use a multiple of {per_step}",
                    )
                )
                continue
            micro = value // per_step
            if par.schedule == "dualpipe" and micro % 2:
                problems.append(
                    FieldProblem(
                        where,
                        f"DualPipe needs an even number of micro-batches per replica; {value} sequences give {micro}",
                        value,
                        fix=f"use a multiple of {2 * per_step}",
                    )
                )
            if micro < par.pipeline:
                warnings.append(
                    f"phase {phase.name}: {micro} micro-batches for {par.pipeline} stages leaves the "
                    "pipeline mostly idle (bubble)"
                )
    if par.schedule == "dualpipe" and par.pipeline % 2:
        problems.append(
            FieldProblem(
                "parallelism.schedule",
                f"DualPipe needs an even number of pipeline stages, got {par.pipeline}",
                par.pipeline,
                fix="use an even parallelism.pipeline or schedule 1f1b",
            )
        )
    return problems, warnings


# --------------------------------------------------------------------------- plan


def _gib(n: float) -> str:
    return f"{n / GIB:.3g}"


def blended_price(spec: JobSpec) -> float:
    """Price per device-hour of the nodes the job runs on, taking non-spare pools in spec order."""
    return sum(take * spec.pool_price(pool) for pool, take in spec.pools_used()) / spec.resources.nodes


def _phase_plan(spec: JobSpec, mesh: Mesh, phase: PhaseSpec, price: float) -> PhasePlan:
    par, acc = spec.parallelism, spec.resources.accelerator
    tokens = phase_tokens(phase)
    schedule = BatchSchedule.for_phase(phase, granularity=mesh.data * par.micro_batch_size)
    steps = phase.steps if phase.steps is not None else schedule.count_steps(tokens, phase.seq_len)
    fpt = model_flops_per_token(spec.model, phase.seq_len)
    mfu = phase.expected_mfu or spec.training.expected_mfu
    rate = acc.peak_bf16_tflops * 1e12 * mfu  # achieved FLOP/s per device
    gpu_hours = tokens * fpt / rate / 3600
    step_seconds = schedule.end * phase.seq_len * fpt / (mesh.world_size * rate)
    return PhasePlan(
        name=phase.name,
        tokens=tokens,
        seq_len=phase.seq_len,
        steps=steps,
        batch_start=schedule.start,
        batch_end=schedule.end,
        flops_per_token=fpt,
        mfu=mfu,
        step_seconds=step_seconds,
        gpu_hours=gpu_hours,
        cost_usd=gpu_hours * price,
        days=gpu_hours / mesh.world_size / 24,
    )


def make_plan(spec: JobSpec) -> Plan:
    """Lay the job out and cost it, or raise ``PlanError`` with every problem found."""
    mesh, problems = _mesh_problems(spec)
    if mesh is None:
        raise PlanError(problems, spec.name)
    batch_problems, warnings = _batch_problems(spec, mesh)
    problems += batch_problems
    par, model = spec.parallelism, spec.model
    seq0 = spec.phases[0].seq_len
    counts = (
        par.layer_partition if isinstance(par.layer_partition, list) else balanced_counts(model, seq0, par.pipeline)
    )
    stages = stage_layers_from_counts(counts, model.mtp_depth)
    sparams = [stage_params(model, s, mesh.expert, mesh.tensor) for s in stages]
    memories = []
    for phase in spec.phases:
        first_batch = phase.global_batch if isinstance(phase.global_batch, int) else phase.global_batch.start
        micro = max(1, first_batch // (mesh.data * par.micro_batch_size))
        memories.append(
            [
                stage_memory(model, par, spec.training.precision, s, p, mesh.data, phase.seq_len, micro)
                for s, p in zip(stages, sparams)
            ]
        )
    worst_index = max(range(len(memories)), key=lambda k: max(m.total for m in memories[k]))
    worst_phase = memories[worst_index]
    limit = spec.resources.accelerator.memory_gb * GIB
    for m in worst_phase:
        if m.total > limit:
            problems.append(
                FieldProblem(
                    "resources.accelerator.memory_gb",
                    f"in phase {spec.phases[worst_index].name}, stage {m.stage} needs {_gib(m.total)} GiB per device "
                    f"(weights {_gib(m.weights)}, gradients {_gib(m.gradients)}, optimizer {_gib(m.optimizer)}, "
                    f"activations {_gib(m.activations)}) "
                    f"but the accelerator has {spec.resources.accelerator.memory_gb:g}",
                    spec.resources.accelerator.memory_gb,
                    fix="add pipeline stages or expert parallelism, enable activation_checkpointing, "
                    "or lower micro_batch_size",
                )
            )
            break
    if problems:
        raise PlanError(problems, spec.name)
    price = blended_price(spec)
    return Plan(
        spec=spec,
        mesh=mesh,
        stages=stages,
        stage_params=sparams,
        stage_memory=worst_phase,
        params=model_params(model),
        flops_per_token=model_flops_per_token(model, seq0),
        mtp_flops_per_token=mtp_flops(model, seq0),
        phases=[_phase_plan(spec, mesh, p, price) for p in spec.phases],
        price_per_gpu_hour=price,
        warnings=warnings,
    )
