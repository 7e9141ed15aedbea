"""`orch submit`, `list`, `status`, `cancel`, `events`: the researcher's daily commands."""

from __future__ import annotations

import argparse
import time

from orchestrator.cli.common import add_spec_arguments
from orchestrator.cli.k8s_commands import add_k8s_arguments, submit_k8s
from orchestrator.cli.output import add_output_arguments, emit, machine, table, watch
from orchestrator.cli.progress import (
    event_line,
    follow_job,
    job_summary_lines,
    latest_startup,
    progress_line,
    stderr_to,
)
from orchestrator.cli.spec_commands import spec_arguments
from orchestrator.control.client import ControlPlane
from orchestrator.control.rows import job_json
from orchestrator.humanize import ago, duration
from orchestrator.lifecycle import JobState

LIST_DEFAULT = 20


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="a running Ray cluster (default: RAY_ADDRESS, then address in "
        "ORCH_HOME/config.yaml, then the embedded local cluster)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="validate, plan, queue and run a job; follow it until it ends",
        description="Validate, plan and enqueue a job, then follow it: each start-up phase (cluster, "
        "placement, workers, data, engine build, restore, first step), state change and "
        "checkpoint is printed as it happens. Exit 0 only if the job succeeds.",
    )
    add_spec_arguments(p)
    add_cluster_arguments(p)
    p.add_argument("--detach", "-d", action="store_true", help="print the job id and return once it is queued")
    p.add_argument(
        "--target",
        choices=("local", "k8s"),
        default="local",
        help="local (default): the embedded or --address Ray cluster; k8s: a RayJob through the Kubernetes API",
    )
    add_k8s_arguments(p)
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("list", help=f"jobs, newest first (the newest {LIST_DEFAULT}; --all for every job)")
    add_output_arguments(p, watch="print the table again whenever it changes (Ctrl-C stops)")
    p.add_argument("--all", action="store_true", help=f"every job (default: the newest {LIST_DEFAULT})")
    p.add_argument(
        "--limit", type=int, default=LIST_DEFAULT, metavar="N", help=f"the newest N jobs (default: {LIST_DEFAULT})"
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="one job: state, progress, start-up phase, transitions")
    p.add_argument("job")
    add_output_arguments(p, watch="print it again whenever it changes, until the job ends (Ctrl-C stops)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="stop a job (queued or running)")
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("events", help="what happened (the newest --limit, printed oldest first)")
    p.add_argument("job", nargs="?", help="only this job's events (default: all)")
    p.add_argument("--limit", type=int, default=200, metavar="N", help="the newest N events (default: 200)")
    add_output_arguments(p, watch="keep printing new events as they happen (Ctrl-C stops)")
    p.set_defaults(func=cmd_events)


def cmd_submit(args: argparse.Namespace) -> int:
    if args.target == "k8s":
        return submit_k8s(args)
    began = time.time()
    plane = ControlPlane(address=args.address)

    def announce(text: str) -> None:
        print(f"[+{time.time() - began:5.0f}s] {text}", flush=True)

    job = plane.submit(args.file, args.profile, args.overrides, announce=announce)
    announce(
        f"submitted {job['id']}: {job['world_size']} devices, {job['total_steps']} steps "
        f"(cluster ready in {duration(job['submitted_at'] - began)})"
    )
    if args.detach:
        print(f"  follow:  orch status {job['id']} --watch   orch logs -f {job['id']}   orch events {job['id']} -w")
        print(f"  stop:    orch cancel {job['id']}")
        return 0
    print("  (Ctrl-C detaches; the job keeps running)", flush=True)
    try:
        with stderr_to(plane.home / "logs" / "cli-ray.log"):
            final = follow_job(plane, job["id"], since=began)
    except KeyboardInterrupt:
        print(f"\ndetached from {job['id']}; it keeps running. Follow it with: orch status {job['id']} --watch")
        return 0
    for line in job_summary_lines(plane, final, spec_arguments(args)):
        print(line)
    return 0 if final["state"] == "succeeded" else 1


def newest(items: list, limit: int | None) -> list:
    """The newest ``limit`` of ``items`` (oldest first in, newest first out)."""
    items = list(reversed(items))
    return items if limit is None else items[: max(0, limit)]


def cmd_list(args: argparse.Namespace) -> int:
    plane = ControlPlane()

    def render() -> tuple[str, bool]:
        jobs = newest(plane.store.list_jobs(), None if args.all else args.limit)
        if machine(args):
            return "", True
        if not jobs:
            return "no jobs; submit one with: orch submit jobs/v3_pretrain.yaml --profile local", False
        return "\n".join(table(list_rows(jobs, args.output == "wide", time.time()))), False

    if machine(args):
        emit(args, [job_json(j) for j in newest(plane.store.list_jobs(), None if args.all else args.limit)])
        return 0
    return watch(args, render)


def list_rows(jobs: list[dict], wide: bool, now: float) -> list[list[str]]:
    header = ["ID", "TEAM", "PRI", "STATE", "STEP", "LOSS", "AGE", "NOTE"]
    if wide:
        header[6:6] = ["DEVICES", "ATTEMPT", "CKPT", "TOK/S", "RAN"]
    rows = [header]
    for j in jobs:
        row = [
            j["id"],
            j["team"],
            str(j["priority"]),
            j["state"],
            f"{j['step']}/{j['total_steps']}",
            f"{j['loss']:.3f}" if j["loss"] is not None else "-",
            ago(j["submitted_at"], now),
            (j["message"] or "")[: 60 if not wide else 200],
        ]
        if wide:
            ran = (j["ended_at"] or now) - j["started_at"] if j["started_at"] else None
            row[6:6] = [
                str(j["world_size"]),
                str(j["attempt"]),
                str(j["last_checkpoint_step"]) if j["last_checkpoint_step"] is not None else "-",
                f"{j['tokens_per_s']:,.0f}" if j["tokens_per_s"] else "-",
                duration(ran),
            ]
        rows.append(row)
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    job_id = plane.store.get_job(args.job)["id"]
    if machine(args):
        job = plane.store.get_job(job_id)
        emit(args, {**job_json(job), "transitions": plane.store.transitions(job_id)})
        return 0

    def render() -> tuple[str, bool]:
        job = plane.store.get_job(job_id)
        return "\n".join(status_lines(plane, job, args.output == "wide")), JobState(job["state"]).is_terminal

    return watch(args, render)


def status_lines(plane: ControlPlane, job: dict, wide: bool) -> list[str]:
    now = time.time()
    events = [e for e in plane.store.events(job["id"], limit=100_000) if e["kind"] == "job.startup"]
    lines = [progress_line(plane, job, latest_startup(events, job["attempt"]), now)]
    lines.append(
        f"  team {job['team']}, priority {job['priority']}, {job['world_size']} devices "
        f"({job['nodes']} nodes x {job['devices_per_node']}), attempt {job['attempt']}, "
        f"restarts {job['restarts']}, submitted {ago(job['submitted_at'], now)}"
    )
    if job["assignment"]:
        lines.append(f"  nodes: {', '.join(job['assignment'])}")
    if job["message"]:
        lines.append(f"  note: {job['message']}")
    lines.append("  transitions:")
    for t in plane.store.transitions(job["id"]):
        clock = time.strftime("%H:%M:%S", time.localtime(t["at"]))
        lines.append(
            f"    {clock} ({ago(t['at'], now):>7})  {t['from_state'] or '-':>13} -> "
            f"{t['to_state']:<13} {t['reason'] or ''}".rstrip()
        )
    if wide and events:
        lines.append("  start-up phases:")
        lines += [f"    {event_line(e, job['submitted_at'])}" for e in events]
    return lines


def cmd_cancel(args: argparse.Namespace) -> int:
    job = ControlPlane().cancel(args.job)
    print(f"cancel requested for {job['id']} ({job['state']}); see: orch status {job['id']} --watch")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    store = ControlPlane().store
    job_id = store.get_job(args.job)["id"] if args.job else None
    events = list(reversed(newest(store.events(job_id, limit=10**9), args.limit)))
    if machine(args):
        emit(args, events)
        return 0
    now = time.time()
    for e in events:
        print(event_row(e, now, args.output == "wide"))
    after = events[-1]["id"] if events else 0
    try:
        while getattr(args, "watch", False):
            time.sleep(args.interval)
            for e in store.events(job_id, after_id=after):
                print(event_row(e, time.time(), args.output == "wide"), flush=True)
                after = e["id"]
    except KeyboardInterrupt:
        pass
    return 0


def event_row(e: dict, now: float, wide: bool) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
    text = f"{when} ({ago(e['at'], now):>7})  {e['kind']:<22} {e['message']}  [{e['actor']}]"
    return text + (f"  {e['data']}" if wide and e.get("data") else "")
