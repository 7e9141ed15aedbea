"""`orch nodes list|cordon|uncordon|drain|preempt`: the operator's node commands.

Cordon keeps new gangs off a node (the scheduler skips it); drain also moves work off it: the jobs
holding it checkpoint, stop and are requeued elsewhere. `preempt` is a drill on the embedded
cluster: with `--notice S` the jobs on the node are told to checkpoint within S seconds first, then
the node's raylet is killed (as a spot reclaim would); `--replace` starts a new raylet with the same
labels afterwards.
"""

from __future__ import annotations

import argparse
import os

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.cluster.provider import RayNodeProvider
from orchestrator.control.client import ControlPlane
from orchestrator.control.node_ops import (
    ask_ray_runner,
    node_rows,
    preempt_drill,
    set_node,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nodes", help="list nodes; cordon, uncordon, drain, or preempt one (drill)")
    actions = p.add_subparsers(dest="node_command", metavar="ACTION")
    actions.required = True
    a = actions.add_parser("list", help="nodes with pool, devices used/free, health, cordon, jobs")
    add_json_argument(a)
    a.set_defaults(func=cmd_list)
    for name, helptext in (
        ("cordon", "keep new gangs off the node"),
        ("uncordon", "allow the node again"),
        ("drain", "cordon, then checkpoint and move the jobs on it elsewhere"),
    ):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("node", help="the node's name (orch nodes lists them)")
        a.add_argument("--reason", default="operator request", help="recorded in the event log")
        a.set_defaults(func=cmd_cordon, action=name)
    a = actions.add_parser("preempt", help="drill: take the node away like a spot reclaim (embedded cluster)")
    a.add_argument("node", help="the node's name (orch nodes lists them)")
    a.add_argument("--notice", type=float, default=0.0, help="seconds of warning before the node goes")
    a.add_argument("--replace", action="store_true", help="start a replacement raylet with the same labels")
    a.set_defaults(func=cmd_preempt)


def _actor() -> str:
    return f"user:{os.environ.get('USER', 'unknown')}"


def _connected() -> tuple[ControlPlane, RayNodeProvider]:
    plane = ControlPlane()
    plane.connect(start=False)
    return plane, RayNodeProvider(plane.store)


def cmd_list(args: argparse.Namespace) -> int:
    plane, provider = _connected()
    rows = node_rows(plane.store, provider)
    if args.json:
        print_json(rows)
        return 0
    print(f"{'NODE':<10} {'POOL':<18} {'KIND':<10} {'USED/DEV':<9} {'HEALTH':<7} {'CORDON':<7} JOBS")
    for r in rows:
        print(
            f"{r['name']:<10} {r['pool']:<18} {r['kind']:<10} {r['used']}/{r['devices']:<7} {r['health']:<7} "
            f"{'yes' if r['cordoned'] else '-':<7} {', '.join(r['jobs']) or '-'}"
        )
    return 0


def cmd_cordon(args: argparse.Namespace) -> int:
    plane, provider = _connected()
    for line in set_node(plane.store, provider, args.node, args.action, args.reason, _actor()):
        print(line)
    return 0


def cmd_preempt(args: argparse.Namespace) -> int:
    plane, provider = _connected()
    for line in preempt_drill(
        plane.store, provider, plane.cluster, args.node, args.notice, args.replace, _actor(), ask_ray_runner
    ):
        print(line)
    return 0
