"""Human-readable views of a plan and a spec: one screen each, numbers with units."""

from __future__ import annotations

from orchestrator.checkpoint.policy import planned_checkpoints
from orchestrator.humanize import money as _money
from orchestrator.plan import reference
from orchestrator.plan.planner import Plan


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)


def money(n: float) -> str:
    return _money(n)


def hours(n: float) -> str:
    return f"{n:,.0f}" if n >= 100 else f"{n:.4g}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def render_summary(plan: Plan, arguments: str = "FILE") -> str:
    """The one-screen summary `orch validate` prints for a valid spec; ``arguments``: the spec file with
    its --profile/--set arguments, repeated in the `next` hint."""
    s, m = plan.spec, plan.mesh
    return "\n".join(
        [
            f"{s.name}: valid (team {s.team}, priority {s.priority})",
            f"  model      {human(plan.params.total)} params, {human(plan.params.active)} active/token, "
            f"{s.model.n_layers} blocks, {s.model.n_routed_experts} routed experts "
            f"(top-{s.model.n_activated_experts})",
            f"  mesh       {m.world_size} x {s.resources.accelerator.type} = PP{m.pipeline} x DP{m.data} "
            f"(EP{m.expert}) x TP{m.tensor} on {m.nodes} nodes, {s.parallelism.schedule}",
            f"  training   {len(plan.phases)} phase(s), {human(sum(p.tokens for p in plan.phases))} tokens, "
            f"{plan.total_steps:,} steps",
            f"  cost       {hours(plan.total_gpu_hours)} GPU-hours, {money(plan.total_cost_usd)}, "
            f"{plan.total_days:.1f} days "
            "(planned training compute at the expected MFU; start-up, checkpoints and restarts are extra)",
            f"  next       orch plan {arguments} for the full layout; orch submit {arguments} to run it",
        ]
    )


def render_plan(plan: Plan) -> str:
    s, m = plan.spec, plan.mesh
    acc = s.resources.accelerator
    lines = [
        f"plan for {s.name}",
        "",
        f"mesh: world {m.world_size} = pipeline {m.pipeline} x data {m.data} x tensor {m.tensor}; "
        f"expert {m.expert} (each expert shard replicated {m.expert_data}x); {m.nodes} nodes x {m.devices_per_node} "
        f"{acc.type}; an expert group spans {m.expert_group_nodes()} node(s); schedule {s.parallelism.schedule}",
        f"params: {human(plan.params.total)} total, {human(plan.params.active)} active per token "
        f"({human(plan.params.active_with_embedding)} with the embedding), MTP {human(plan.params.mtp)}",
        f"flops/token: {plan.flops_per_token / 1e9:.1f} GFLOPs at seq {s.phases[0].seq_len} "
        f"(+{plan.mtp_flops_per_token / 1e9:.1f} for MTP)",
        "",
    ]
    rows = [["stage", "layers", "nodes", "params", "params/device", "memory/device"]]
    for layers, params, mem in zip(plan.stages, plan.stage_params, plan.stage_memory):
        names = layers.layer_names()
        shown = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(layers.blocks)} blocks)"
        nodes = m.stage_nodes(layers.stage)
        node_text = f"{nodes[0]}" if len(nodes) == 1 else f"{nodes[0]}-{nodes[-1]}"
        rows.append(
            [
                str(layers.stage),
                shown,
                node_text,
                human(params.total),
                human(params.per_device),
                f"{mem.total / 1024**3:.1f} GiB",
            ]
        )
    lines += _table(rows)
    worst = plan.worst_memory()
    lines += [
        "",
        f"memory: worst stage {worst.stage}: {worst.total / 1024**3:.1f} of {acc.memory_gb:g} GiB "
        f"(weights {worst.weights / 1024**3:.1f}, grads {worst.gradients / 1024**3:.1f}, "
        f"optimizer {worst.optimizer / 1024**3:.1f}, activations {worst.activations / 1024**3:.1f})",
        "",
    ]
    rows = [["phase", "tokens", "seq", "batch", "steps", "step s", "days", "GPU-hours", "cost"]]
    for p in plan.phases:
        batch = str(p.batch_end) if p.batch_start == p.batch_end else f"{p.batch_start}->{p.batch_end}"
        rows.append(
            [
                p.name,
                human(p.tokens),
                str(p.seq_len),
                batch,
                f"{p.steps:,}",
                f"{p.step_seconds:.2f}",
                f"{p.days:.2f}",
                hours(p.gpu_hours),
                money(p.cost_usd),
            ]
        )
    rows.append(
        [
            "total",
            "",
            "",
            "",
            f"{plan.total_steps:,}",
            "",
            f"{plan.total_days:.2f}",
            hours(plan.total_gpu_hours),
            money(plan.total_cost_usd),
        ]
    )
    lines += _table(rows)
    if s.cost.reference != "none":
        lines += [
            "",
            f"against the reference run (DeepSeek-V3, {reference.REFERENCE_GPUS} H800, "
            f"{money(reference.REFERENCE_COST_USD)}):",
        ]
        rows = [["phase", "this plan GPU-h", "reference GPU-h", "ratio"]]
        for row in reference.compare_phases({p.name: p.gpu_hours for p in plan.phases}):
            rows.append(
                [row["phase"], hours(row["gpu_hours"]), hours(row["reference_gpu_hours"]), f"{row['ratio']:.1%}"]
            )
        lines += _table(rows)
    lines += ["", checkpoint_line(plan)]
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def checkpoint_line(plan: Plan) -> str:
    """Every dollar of the plan beside the GPUs': checkpoints at the interval the policy would choose."""
    c = planned_checkpoints(plan.spec, plan.total_days, plan.total_steps)
    return (
        f"checkpoints: {c['saves']:,} saves of {c['checkpoint_bytes'] / 1e12:.2f} TB every "
        f"{c['interval_s'] / 60:.1f} min over {plan.total_days:.1f} days ({c['write_gbps']:.1f} GB/s sustained): "
        f"{money(c['requests_usd'])} requests + {money(c['storage_usd'])} storage = {money(c['cost_usd'])} "
        f"at {plan.spec.cost.storage.gb_month_usd:g} $/GB-month; {money(c['kept_after_usd_per_month'])}/month "
        "for what is kept after the run"
    )
