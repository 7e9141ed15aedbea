"""`orch submit`, `list`, `status`, `logs`, `cancel`, `events`: the researcher's daily commands."""

from __future__ import annotations

import argparse
import sys
import time

from orchestrator.control.rows import job_json
from orchestrator.cli.common import add_json_argument, add_spec_arguments, print_json
from orchestrator.cli.progress import follow_job, job_summary_lines, progress_line
from orchestrator.control.client import ControlPlane


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="a running Ray cluster (default: the embedded local cluster; "
                                          "also RAY_ADDRESS)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="validate, plan, queue and run a job; follow it until it ends")
    add_spec_arguments(p)
    add_cluster_arguments(p)
    p.add_argument("--detach", "-d", action="store_true", help="print the job id and return at once")
    p.add_argument("--target", choices=("local", "k8s"), default="local",
                   help="local: the embedded or --address Ray cluster; k8s: a RayJob through the Kubernetes API")
    from orchestrator.cli.k8s_commands import add_k8s_arguments

    add_k8s_arguments(p)
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("list", help="jobs, newest last")
    add_json_argument(p)
    p.add_argument("--all", action="store_true", help="include finished jobs (default: the last 20)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="one job: state, progress, transitions")
    p.add_argument("job")
    add_json_argument(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="a job's log")
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", help="stop a job (queued or running)")
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("events", help="what happened, oldest first")
    p.add_argument("job", nargs="?")
    p.add_argument("--limit", type=int, default=200)
    add_json_argument(p)
    p.set_defaults(func=cmd_events)


def cmd_submit(args: argparse.Namespace) -> int:
    if args.target == "k8s":
        from orchestrator.cli.k8s_commands import submit_k8s

        return submit_k8s(args)
    plane = ControlPlane(address=args.address)
    job = plane.submit(args.file, args.profile, args.overrides)
    print(f"submitted {job['id']}: {job['world_size']} devices, {job['total_steps']} steps")
    if args.detach:
        print(f"  follow:  orch status {job['id']}   orch logs -f {job['id']}   orch events {job['id']}")
        print(f"  stop:    orch cancel {job['id']}")
        return 0
    print("  (Ctrl-C detaches; the job keeps running)")
    try:
        final = follow_job(plane, job["id"])
    except KeyboardInterrupt:
        print(f"\ndetached from {job['id']}; it keeps running. Follow it with: orch status {job['id']}")
        return 0
    for line in job_summary_lines(plane, final, args.file):
        print(line)
    return 0 if final["state"] == "succeeded" else 1


def cmd_list(args: argparse.Namespace) -> int:
    jobs = ControlPlane().store.list_jobs()
    if not args.all:
        jobs = jobs[-20:]
    if args.json:
        print_json([job_json(j) for j in jobs])
        return 0
    if not jobs:
        print("no jobs; submit one with: orch submit jobs/v3_pretrain.yaml --profile local")
        return 0
    rows = [["ID", "TEAM", "PRI", "STATE", "STEP", "LOSS", "AGE", "NOTE"]]
    now = time.time()
    for j in jobs:
        rows.append([j["id"], j["team"], str(j["priority"]), j["state"], f"{j['step']}/{j['total_steps']}",
                     f"{j['loss']:.3f}" if j["loss"] is not None else "-", _age(now - j["submitted_at"]),
                     (j["message"] or "")[:60]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    job = plane.store.get_job(args.job)
    if args.json:
        print_json({**job_json(job), "transitions": plane.store.transitions(job["id"])})
        return 0
    print(progress_line(plane, job))
    print(f"  team {job['team']}, priority {job['priority']}, {job['world_size']} devices "
          f"({job['nodes']} nodes x {job['devices_per_node']}), attempt {job['attempt']}, restarts {job['restarts']}")
    if job["assignment"]:
        print(f"  nodes: {', '.join(job['assignment'])}")
    if job["message"]:
        print(f"  note: {job['message']}")
    print("  transitions:")
    for t in plane.store.transitions(job["id"]):
        print(f"    {time.strftime('%H:%M:%S', time.localtime(t['at']))}  {t['from_state'] or '-':>13} -> "
              f"{t['to_state']:<13} {t['reason'] or ''}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    job = plane.store.get_job(args.job)
    path = plane.log_path(job["id"])
    position = 0
    while True:
        if path.exists():
            with open(path) as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            sys.stdout.write(chunk)
            sys.stdout.flush()
        if not args.follow or plane.store.get_job(job["id"])["state"] in ("succeeded", "failed", "cancelled"):
            if not path.exists() and not args.follow:
                print(f"no log yet for {job['id']} (state {job['state']})")
            return 0
        time.sleep(1)


def cmd_cancel(args: argparse.Namespace) -> int:
    job = ControlPlane().cancel(args.job)
    print(f"cancel requested for {job['id']} ({job['state']}); see: orch status {job['id']}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    store = ControlPlane().store
    job_id = store.get_job(args.job)["id"] if args.job else None
    events = store.events(job_id, limit=args.limit)
    if args.json:
        print_json(events)
        return 0
    for e in events:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['at']))}  {e['kind']:<22} {e['message']}"
              f"  [{e['actor']}]")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
