"""docs/spec.md's field tables, generated from the pydantic models so they cannot drift from them.

For every field of every section: its path, type, whether it is required, its default, its unit, its
bounds (from the models' constraints) and its description (the model's ``description``, else the
note below). ``python -m orchestrator.spec.reference_doc --write`` regenerates the file;
``tests/unit/test_spec_reference.py`` fails when the committed file differs from what the models say.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

import annotated_types as at
from pydantic import BaseModel

from orchestrator.spec.schema import JobSpec

MARKER = (
    "<!-- generated from orchestrator/spec/schema.py by `python -m orchestrator.spec.reference_doc --write`; "
    "do not edit below -->"
)
DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"

# Units by field name (the models carry numbers; this says what they count).
UNITS = {
    "price_per_gpu_hour": "USD per device-hour",
    "budget_usd": "USD",
    "budget_gpu_hours": "device-hours",
    "memory_gb": "GiB per device",
    "peak_bf16_tflops": "TFLOP/s per device",
    "peak_fp8_tflops": "TFLOP/s per device",
    "notice_seconds": "seconds",
    "minutes": "minutes",
    "interruptions_per_node_day": "per node per day",
    "tokens": "tokens",
    "hold_tokens": "tokens",
    "decay_tokens": "tokens",
    "ramp_tokens": "tokens",
    "seq_len": "tokens",
    "global_batch": "sequences",
    "start": "sequences",
    "end": "sequences",
    "micro_batch_size": "sequences",
    "steps": "steps",
    "warmup_steps": "steps",
    "nodes": "nodes",
    "gpus_per_node": "devices per node",
    "spare_nodes": "nodes",
    "expected_mfu": "fraction (0-1]",
    "peak": "learning rate",
    "final": "learning rate",
    "lr": "learning rate",
    "keep_every": "steps",
    "keep_last": "checkpoints",
    "rope_theta": "",
    "max_restarts": "restarts",
}

# Descriptions of fields whose model has none (a model's own description wins).
NOTES = {
    "name": "job name (lowercase letters, digits, '-')",
    "team": "the team charged for the job's device-hours",
    "priority": "higher runs first and may preempt lower",
    "model": "the architecture",
    "model.vocab_size": "vocabulary size",
    "model.n_heads": "attention heads",
    "model.qk_nope_head_dim": "per-head query/key dimension without RoPE",
    "model.v_head_dim": "per-head value dimension",
    "model.n_routed_experts": "routed experts per MoE layer",
    "model.n_shared_experts": "shared experts per MoE layer",
    "model.score_func": "router affinity function",
    "model.route_scale": "scale of the routing weights",
    "model.rope_theta": "RoPE base",
    "model.norm_eps": "RMSNorm epsilon",
    "parallelism": "the layout over devices",
    "parallelism.schedule": "pipeline schedule",
    "resources": "devices and where they come from",
    "resources.accelerator": "the device type",
    "resources.accelerator.peak_bf16_tflops": "dense BF16 peak",
    "resources.accelerator.peak_fp8_tflops": "dense FP8 peak (0: none)",
    "resources.accelerator.memory_gb": "device memory",
    "resources.gpus_per_node": "devices per node (CPU worker slots on the embedded cluster)",
    "resources.pools": "node pools",
    "resources.pools[].name": "pool name",
    "resources.pools[].kind": "on-demand, spot (interruptible) or spare (hot spares)",
    "resources.pools[].nodes": "nodes in the pool",
    "training": "optimizer, schedule and numerics",
    "training.optimizer": "the optimizer",
    "training.optimizer.name": "optimizer",
    "training.optimizer.betas": "AdamW betas",
    "training.optimizer.eps": "AdamW epsilon",
    "training.optimizer.weight_decay": "decoupled weight decay",
    "training.optimizer.grad_clip": "global gradient-norm clip",
    "training.lr_schedule": "learning-rate schedule",
    "training.lr_schedule.peak": "peak learning rate",
    "training.lr_schedule.warmup_steps": "linear warm-up",
    "training.lr_schedule.tail[].tokens": "length of the stage",
    "training.lr_schedule.tail[].lr": "its learning rate",
    "training.precision": "training numerics (the planner costs fp8; the runtime runs bf16/fp32)",
    "training.balance": "auxiliary-loss-free load balancing",
    "training.balance.bias_update_speed": "expert bias update speed (gamma)",
    "training.balance.sequence_aux_loss_weight": "sequence-wise balance loss weight (alpha)",
    "training.mtp_loss_weight": "weight of the multi-token-prediction loss (lambda)",
    "training.seed": "initialisation and data-order seed",
    "phases": "training phases, in order",
    "phases[].name": "phase name",
    "phases[].seq_len": "sequence length",
    "phases[].global_batch.start": "batch at the start of the ramp",
    "phases[].global_batch.end": "batch after it",
    "phases[].global_batch.ramp_tokens": "tokens over which the batch grows",
    "phases[].tokens": "tokens to train (or give steps)",
    "phases[].steps": "steps to train (or give tokens)",
    "data": "training data: synthetic or token shards",
    "data.source": "synthetic or shards",
    "data.seed": "generator seed",
    "data.path": "directory or s3:// prefix of token shards",
    "data.dtype": "token dtype of the shards",
    "checkpoint": "where and how often to checkpoint",
    "checkpoint.interval": "auto (from the failure rate and save cost), or every N steps or M minutes",
    "checkpoint.interval.steps": "every N steps",
    "checkpoint.interval.minutes": "every M minutes",
    "checkpoint.retention": "which checkpoints to keep",
    "checkpoint.retention.keep_last": "newest N kept",
    "checkpoint.s3_endpoint_url": "S3-compatible endpoint (default: AWS)",
    "fault_tolerance": "restarts and spares",
    "fault_tolerance.max_restarts": "restarts before the job fails",
    "fault_tolerance.spare_nodes": "hot spare nodes kept ready",
    "fault_tolerance.restart_budget": "restarts allowed per sliding window, infrastructure and crashes apart",
    "cost": "prices, reference and budgets",
    "cost.price_per_gpu_hour": "price of pools that name none",
    "cost.reference": "the run to compare against",
    "cost.budget_gpu_hours": "the job stops being admitted beyond this",
    "cost.budget_usd": "the same, in dollars",
    "cost.storage": "object-storage list prices for checkpoints and data reads",
    "profiles": "named overlays applied with --profile NAME (any subset of the sections above)",
}

BOUND_TEXT = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def type_text(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        texts = list(dict.fromkeys(type_text(a) for a in args if a is not type(None)))
        return " or ".join(texts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(field) -> str:
    parts = []
    for item in field.metadata:
        for kind, attr, symbol in BOUND_TEXT:
            if isinstance(item, kind):
                parts.append(f"{symbol} {getattr(item, attr):g}")
        if isinstance(item, at.MinLen) and item.min_length:
            parts.append(f"length >= {item.min_length}")
        if isinstance(item, at.MaxLen):
            parts.append(f"length <= {item.max_length}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def default_text(field) -> str:
    if field.is_required():
        return ""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == []:
        return "[]"
    return f"`{value}`"


def submodels(annotation) -> list[type[BaseModel]]:
    """The models a field holds: itself, a list's items, a union's alternatives."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in submodels(a)]
    return []


def rows(model: type[BaseModel], prefix: str = "") -> list[list[str]]:
    """One row per field, depth first: path, type, required, default, unit, bounds, description."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        key = path.split(".")[-1].split("[")[0]
        out.append(
            [
                path,
                type_text(field.annotation),
                "yes" if field.is_required() else "no",
                default_text(field),
                UNITS.get(key, ""),
                bounds_text(field),
                field.description or NOTES.get(path, ""),
            ]
        )
        is_list = typing.get_origin(field.annotation) is list
        for sub in submodels(field.annotation):
            sub_rows = rows(sub, f"{path}{'[]' if is_list else ''}.")
            if isinstance(field.discriminator, str):  # one of several sections, chosen by a key
                tag = typing.get_args(sub.model_fields[field.discriminator].annotation)[0]
                sub_rows = [r[:6] + [f"({field.discriminator}: {tag}) {r[6]}"] for r in sub_rows]
            out += sub_rows
    return _merge(out)


def _merge(table: list[list[str]]) -> list[list[str]]:
    """A field several alternatives share (``data.source``) in one row, its types joined."""
    merged: dict[str, list[str]] = {}
    for row in table:
        if row[0] in merged:
            seen = merged[row[0]]
            seen[1] = f"{seen[1]} \\| {row[1]}" if row[1] not in seen[1] else seen[1]
            seen[6] = seen[6].split(") ", 1)[-1]
        else:
            merged[row[0]] = list(row)
    return list(merged.values())


def render() -> str:
    lines = [
        MARKER,
        "",
        "## Every field",
        "",
        "Generated from the models: *required* fields have no default; bounds are checked when the spec "
        "is read (exit 2 naming the field, the value and the fix). `[]` marks list items; `data` is "
        "either synthetic (`seed`, `branching`, `concentration`) or shards (`path`, `dtype`).",
        "",
    ]
    for section in JobSpec.model_fields:
        table = [r for r in rows(JobSpec) if r[0] == section or r[0].startswith((section + ".", section + "[]"))]
        lines += [
            f"### `{section}`",
            "",
            "| field | type | required | default | unit | bounds | description |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            "| "
            + " | ".join([f"`{r[0]}`", *[c.replace("|", "\\|") if i != 0 else c for i, c in enumerate(r[1:])]])
            + " |"
            for r in table
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def document(current: str) -> str:
    """``current`` (docs/spec.md) with everything from the marker on replaced by the generated tables."""
    head = current.split(MARKER)[0].rstrip() + "\n\n"
    return head + render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOC}")
    args = parser.parse_args(argv)
    text = document(DOC.read_text())
    if args.write:
        DOC.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
