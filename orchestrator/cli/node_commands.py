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
import time

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.control.client import ControlPlane
from orchestrator.control.directives import CHECKPOINT_STOP
from orchestrator.control.states import HOLDING, JobState
from orchestrator.errors import OrchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nodes", help="list nodes; cordon, uncordon, drain, or preempt one (drill)")
    actions = p.add_subparsers(dest="node_command", metavar="ACTION")
    actions.required = True
    a = actions.add_parser("list", help="nodes with pool, devices used/free, health, cordon, jobs")
    add_json_argument(a)
    a.set_defaults(func=cmd_list)
    for name, helptext in (("cordon", "keep new gangs off the node"), ("uncordon", "allow the node again"),
                           ("drain", "cordon, then checkpoint and move the jobs on it elsewhere")):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("node")
        a.add_argument("--reason", default="operator request")
        a.set_defaults(func=cmd_cordon, action=name)
    a = actions.add_parser("preempt", help="drill: take the node away like a spot reclaim (embedded cluster)")
    a.add_argument("node")
    a.add_argument("--notice", type=float, default=0.0, help="seconds of warning before the node goes")
    a.add_argument("--replace", action="store_true", help="start a replacement raylet with the same labels")
    a.set_defaults(func=cmd_preempt)


def _actor() -> str:
    return f"user:{os.environ.get('USER', 'unknown')}"


def node_rows(plane: ControlPlane) -> list[dict]:
    from orchestrator.cluster.provider import RayNodeProvider

    plane.connect(start=False)
    holders: dict[str, list[dict]] = {}
    for job in plane.store.list_jobs([s for s in JobState if s in HOLDING]):
        for name in job["assignment"] or []:
            holders.setdefault(name, []).append(job)
    rows = []
    for node in RayNodeProvider(plane.store).nodes():
        jobs = holders.get(node.name, [])
        used = sum(j["devices_per_node"] for j in jobs)
        rows.append({"name": node.name, "pool": node.pool, "kind": node.pool_kind, "devices": node.devices,
                     "used": used, "free": max(0, node.devices - used) if node.alive else 0,
                     "health": "alive" if node.alive else "dead", "cordoned": node.cordoned,
                     "jobs": [j["id"] for j in jobs]})
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    rows = node_rows(ControlPlane())
    if args.json:
        print_json(rows)
        return 0
    print(f"{'NODE':<10} {'POOL':<18} {'KIND':<10} {'USED/DEV':<9} {'HEALTH':<7} {'CORDON':<7} JOBS")
    for r in rows:
        print(f"{r['name']:<10} {r['pool']:<18} {r['kind']:<10} {r['used']}/{r['devices']:<7} {r['health']:<7} "
              f"{'yes' if r['cordoned'] else '-':<7} {', '.join(r['jobs']) or '-'}")
    return 0


def _jobs_on(plane: ControlPlane, node: str) -> list[dict]:
    return [j for j in plane.store.list_jobs([s for s in JobState if s in HOLDING]) if node in (j["assignment"] or [])]


def _known(plane: ControlPlane, node: str) -> None:
    if node not in {r["name"] for r in node_rows(plane)}:
        raise OrchError(f"no node '{node}'; see 'orch nodes list'")


def cmd_cordon(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    _known(plane, args.node)
    plane.store.set_cordon(args.node, args.action != "uncordon", f"{args.action}: {args.reason}", _actor())
    if args.action == "drain":
        for job in _jobs_on(plane, args.node):
            plane.store.update_job(job["id"], preempt_requested=True)
            plane.store.add_event("job.preempting", f"{job['id']}: node {args.node} drained", job["id"],
                                  {"node": args.node}, actor=_actor())
            print(f"  {job['id']}: checkpointing and moving off {args.node}")
    print(f"{args.node}: {args.action}ed" if args.action != "drain" else f"{args.node}: cordoned and draining")
    return 0


def cmd_preempt(args: argparse.Namespace) -> int:
    import ray

    from orchestrator.control.runner import runner_name

    plane = ControlPlane()
    _known(plane, args.node)
    jobs = _jobs_on(plane, args.node)
    plane.store.add_event("node.preempt", f"{args.node}: preemption drill"
                          + (f" with {args.notice:.0f} s notice" if args.notice else " without notice"),
                          data={"node": args.node, "notice_s": args.notice}, actor=_actor())
    if args.notice > 0:
        deadline = time.time() + args.notice
        for job in jobs:
            plane.store.update_job(job["id"], preempt_requested=True)
            try:
                runner = ray.get_actor(runner_name(job["id"], job["attempt"]), namespace="orch")
                runner.request.remote(CHECKPOINT_STOP, deadline)
            except ValueError:
                pass
            print(f"  {job['id']}: told to checkpoint within {args.notice:.0f} s")
        time.sleep(max(0.0, deadline - time.time()))
    killed = plane.cluster.kill_node(args.node)
    plane.store.add_event("node.lost", f"{args.node}: raylet killed ({killed} processes)",
                          data={"node": args.node}, actor=_actor())
    print(f"{args.node}: gone ({killed} processes killed)")
    if args.replace:
        plane.cluster.start_node(args.node)
        plane.store.add_event("node.replaced", f"{args.node}: replacement raylet started", data={"node": args.node},
                              actor=_actor())
        print(f"{args.node}: replacement started with the same labels")
    return 0
