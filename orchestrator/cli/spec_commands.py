"""`orch validate` and `orch plan`: read a spec, lay it out, print it."""

from __future__ import annotations

import argparse
import shlex

from orchestrator.cli.common import add_json_argument, add_spec_arguments, plan_from_args, print_json
from orchestrator.cli.plan_view import render_plan, render_summary
from orchestrator.errors import OrchError, PlanError, SpecError
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.train.support import RuntimeSupportError, check_runnable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check a job spec, its layout and that this runtime can run it; print every problem (exit 2)"
    )
    add_spec_arguments(p)
    p.add_argument(
        "--plan-only",
        action="store_true",
        help="check the spec and its layout only, not what this runtime executes (for full-scale "
        "plans with dualpipe, tensor > 1 or fp8)",
    )
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("plan", help="lay a job out over devices and cost it (no cluster needed)")
    add_spec_arguments(p)
    add_json_argument(p)
    p.add_argument("--no-ranks", action="store_true", help="omit the per-rank mapping from --json")
    p.set_defaults(func=cmd_plan)


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.file, profile=args.profile, overrides=args.overrides)
    plan = make_plan(spec)
    if not args.plan_only:
        try:
            check_runnable(spec)  # the same function submit and the workers call: what validates starts
        except RuntimeSupportError as err:
            raise NotRunnableHere(err.problems, err.source) from None
    print(render_summary(plan, spec_arguments(args)))
    return 0


class NotRunnableHere(RuntimeSupportError):
    """The runtime's refusal, as `orch validate` words it: with the ways to still plan the spec."""

    def render(self) -> str:
        return (
            super().render() + "\n  (orch plan FILE still lays it out and costs it; "
            "orch validate FILE --plan-only checks the plan alone)"
        )


def spec_arguments(args: argparse.Namespace) -> str:
    """The spec file with the same --profile and --set arguments, quoted for a shell: the `next` hint
    must run what was validated, not the full-scale base spec."""
    words = [args.file] + (["--profile", args.profile] if args.profile else [])
    for override in args.overrides:
        words += ["--set", override]
    return " ".join(shlex.quote(w) for w in words)


def cmd_plan(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    if args.json:
        print_json(plan.to_json(include_ranks=not args.no_ranks))
    else:
        print(render_plan(plan))
    return 0


__all__ = ["register", "OrchError", "PlanError", "SpecError"]
