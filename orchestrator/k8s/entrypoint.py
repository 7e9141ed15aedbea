"""The RayJob entrypoint on Kubernetes: train a spec on the Ray cluster this process runs in.

``python -m orchestrator.k8s.entrypoint --spec /etc/orch/job/spec.json --job-id ID``: plan the spec,
choose the gang's nodes with orch's own scheduler from the raylets' ``orch-*`` labels (the same
function the controller uses), and run the Ray Train gang with each rank pinned to its planned
node. Checkpoints go to the spec's ``checkpoint.uri`` under the job id, so a retried RayJob resumes
from the newest committed one.

Where the job's row is in orch's state store (``ORCH_STATE_URL``: the RayJob's head has the cluster's
PostgreSQL URL, and `orch submit --target k8s` recorded the row there), the driver is the RayJob's
half of the control plane: it records each attempt's gang and node prices (``record_gang``) and runs
the attempt in orch's ``JobRunner``, the same actor a Ray controller starts, which writes the step
metrics, commits, job log and outcome. `orch submit` (``k8s/submit.py``) moves the row's state and,
when the RayJob ends, closes the attempt into the ledger: the RayJob's device-hours are in `orch cost`
like any job's. Without the row, it trains as before and records nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from orchestrator.cluster.placement import JobView, schedule
from orchestrator.cluster.provider import node_views_from_ray
from orchestrator.errors import OrchError
from orchestrator.ledger.book import holds_for
from orchestrator.ledger.report import closing_intervals
from orchestrator.lifecycle import Ending, Owner
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import validate_mapping
from orchestrator.state.store import StaleState, StateStore


def choose_nodes(spec, plan, ray_nodes: list[dict]) -> list[str]:
    pools = tuple(p.name for p in spec.resources.pools if p.kind != "spare")
    pools += tuple(p.name for p in spec.resources.pools if p.kind == "spare")
    view = JobView("job", spec.team, spec.priority, 0.0, plan.mesh.nodes, plan.mesh.devices_per_node, pools)
    decision = schedule([view], [], node_views_from_ray(ray_nodes, {}))
    if not decision.place:
        raise SystemExit(f"orch: cannot place the gang: {decision.wait[0].reason}")
    return list(decision.place[0].nodes)


def open_row(job_id: str, state_url: str | None):
    """The state store holding this RayJob's row, or None (no URL, no such row, or not a RayJob's)."""
    if not state_url:
        return None
    try:
        store = StateStore(state_url)
        if store.job_owner(job_id) == Owner.KUBERNETES:
            return store
    except OrchError as exc:
        print(f"orch: not recording in the state store: {exc}", file=sys.stderr)
    return None


def record_attempt(store, job_id: str, assignment: list[str], ray_nodes: list[dict]) -> int:
    """Record the next attempt's gang with the prices of its nodes' pools; the attempt before it (a
    driver KubeRay ran earlier) is closed into the ledger in the same transaction."""
    job = store.job(job_id)
    nodes = {n.name: n for n in node_views_from_ray(ray_nodes, {})}
    holds = holds_for(assignment, job.devices_per_node, nodes, job.spec)
    at = store.clock.now()
    closing = closing_intervals(store, job, Ending.LOST, at) if job.assignment else []
    attempt = job.attempt + 1
    try:
        store.record_gang(job_id, attempt, assignment, holds, closing, at=at)
    except StaleState:
        raise SystemExit(f"orch: attempt {attempt} of {job_id} is already recorded by another driver") from None
    return attempt


def run_recorded(store, job_id: str, attempt: int, home: str) -> int:
    """Run the attempt in orch's ``JobRunner`` (step metrics, commits, log and outcome to the store)."""
    import ray

    from orchestrator.control.runner import JobRunner

    runner = JobRunner.options(resources={"orch_head": 0.001}, max_restarts=0).remote(job_id, attempt, store.url, home)
    outcome = ray.get(runner.run.remote())
    if outcome["status"] != "succeeded":
        print(f"orch: training {outcome['status']}: {outcome.get('error', '')[-2000:]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--storage", default="/tmp/ray/orch")
    args = parser.parse_args(argv)
    import ray

    from orchestrator.checkpoint.locate import open_job_checkpoints
    from orchestrator.train.ray_worker import run_with_ray_train

    with open(args.spec) as handle:
        mapping = json.load(handle)
    spec = validate_mapping(mapping, args.job_id)
    plan = make_plan(spec)
    ray.init()
    ray_nodes = ray.nodes()
    assignment = choose_nodes(spec, plan, ray_nodes)
    store = open_row(args.job_id, os.environ.get("ORCH_STATE_URL"))
    if store is not None:
        attempt = record_attempt(store, args.job_id, assignment, ray_nodes)
        return run_recorded(store, args.job_id, attempt, args.storage)
    selectors = [{"orch-node": assignment[p.node]} for p in plan.mesh.placements()]
    # no state store here: the interruptions the run has seen come from its checkpoint store's attempts
    seen = open_job_checkpoints(spec.checkpoint, args.job_id).exposure_since_first_attempt()
    result = run_with_ray_train(
        mapping,
        plan.mesh.world_size,
        args.storage,
        args.job_id,
        label_selectors=selectors,
        assignment=assignment,
        extra_resources={"orch_device": 1},
        cpus_per_worker=1.0,
        job_id=args.job_id,
        interruptions=seen,
    )
    if result.error is not None:
        print(f"orch: training failed: {result.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
