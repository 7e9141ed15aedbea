"""`orch checkpoints list|verify|rm JOB`: a job's committed checkpoints on its object store."""

from __future__ import annotations

import argparse
import time

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.control.client import ControlPlane
from orchestrator.errors import OrchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoints", help="list, verify or remove a job's checkpoints")
    actions = p.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    actions.required = True
    a = actions.add_parser("list", help="committed checkpoints, oldest first")
    a.add_argument("job", help="the job id")
    add_json_argument(a)
    a.set_defaults(func=cmd_list)
    a = actions.add_parser("verify", help="check every shard's size and sha256 against the manifest")
    a.add_argument("job")
    a.add_argument("step", nargs="?", type=int, help="default: the latest")
    a.set_defaults(func=cmd_verify)
    a = actions.add_parser("rm", help="delete one committed checkpoint")
    a.add_argument("job")
    a.add_argument("step", type=int, help="the checkpoint's step")
    a.set_defaults(func=cmd_rm)


def _store(job_ref: str):
    from orchestrator.checkpoint.locate import open_job_checkpoints

    plane = ControlPlane()
    job = plane.store.get_job(job_ref)
    return job, open_job_checkpoints(job["spec"]["checkpoint"], job["id"], plane.home)


def cmd_list(args: argparse.Namespace) -> int:
    job, store = _store(args.job)
    manifests = [store.manifest(step) for step in store.committed()]
    if args.json:
        print_json(
            [
                {
                    "step": m.step,
                    "tokens": m.tokens,
                    "bytes": m.total_bytes,
                    "files": len(m.files),
                    "created_at": m.created_at,
                    "mesh": m.mesh,
                    "attempt": m.attempt,
                    "format_version": m.format_version,
                }
                for m in manifests
            ]
        )
        return 0
    if not manifests:
        print(f"no committed checkpoints for {job['id']} at {store.objects.uri}")
        return 0
    print(f"{job['id']}: {store.objects.uri}")
    for m in manifests:
        print(
            f"  step {m.step:>8}  {m.tokens:>14,.0f} tokens  {m.total_bytes / 1e6:>9.1f} MB  {len(m.files)} shards  "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(m.created_at))}"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    job, store = _store(args.job)
    steps = store.committed()
    if not steps:
        raise OrchError(f"no committed checkpoints for {job['id']}")
    step = args.step if args.step is not None else steps[-1]
    problems = store.verify(step)
    if problems:
        print(f"step {step}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    manifest = store.manifest(step)
    print(f"step {step}: all {len(manifest.files)} shards verified ({manifest.total_bytes / 1e6:.1f} MB)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    job, store = _store(args.job)
    store.manifest(args.step)  # raises a clear error if there is no such checkpoint
    store.delete_step(args.step)
    print(f"deleted the checkpoint at step {args.step} of {job['id']}")
    return 0
