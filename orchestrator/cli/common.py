"""Argument helpers shared by every command that reads a spec."""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.plan.planner import Plan, make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.spec.schema import JobSpec


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="job spec (YAML)")
    parser.add_argument("--profile", "-p", help="apply the named profile from the spec's profiles section")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field, e.g. --set parallelism.pipeline=2 (repeatable)",
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    return load_spec(args.file, profile=args.profile, overrides=args.overrides)


def plan_from_args(args: argparse.Namespace) -> Plan:
    return make_plan(spec_from_args(args))


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
