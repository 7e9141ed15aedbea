"""`orch validate` and `orch plan`: read a spec, lay it out, print it."""

from __future__ import annotations

import argparse

from orchestrator.cli.common import add_json_argument, add_spec_arguments, plan_from_args, print_json
from orchestrator.errors import OrchError, PlanError, SpecError
from orchestrator.plan.planner import make_plan
from orchestrator.plan.render import render_plan, render_summary
from orchestrator.spec import load_spec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a job spec and its layout; print every problem")
    add_spec_arguments(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("plan", help="lay a job out over devices and cost it (no cluster needed)")
    add_spec_arguments(p)
    add_json_argument(p)
    p.add_argument("--no-ranks", action="store_true", help="omit the per-rank mapping from --json")
    p.set_defaults(func=cmd_plan)


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.file, profile=args.profile, overrides=args.overrides)
    plan = make_plan(spec)
    print(render_summary(plan).replace("{file}", args.file))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    if args.json:
        print_json(plan.to_json(include_ranks=not args.no_ranks))
    else:
        print(render_plan(plan))
    return 0


__all__ = ["register", "OrchError", "PlanError", "SpecError"]
