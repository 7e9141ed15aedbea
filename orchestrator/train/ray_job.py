"""The RayJob entrypoint on Kubernetes: train a spec on the Ray cluster this process runs in.

``python -m orchestrator.train.ray_job --spec /etc/orch/job/spec.json --job-id ID``: plan the spec,
choose the gang's nodes with orch's own scheduler from the raylets' ``orch-*`` labels (the same
function the controller uses), and run the Ray Train gang with each rank pinned to its planned
node. Checkpoints go to the spec's ``checkpoint.uri`` under the job id, so a retried RayJob resumes
from the newest committed one.
"""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.cluster.placement import JobView, schedule
from orchestrator.cluster.provider import node_views_from_ray
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import validate_mapping


def choose_nodes(spec, plan, ray_nodes: list[dict]) -> list[str]:
    pools = tuple(p.name for p in spec.resources.pools if p.kind != "spare")
    pools += tuple(p.name for p in spec.resources.pools if p.kind == "spare")
    view = JobView("job", spec.team, spec.priority, 0.0, plan.mesh.nodes, plan.mesh.devices_per_node, pools)
    decision = schedule([view], [], node_views_from_ray(ray_nodes, {}))
    if not decision.place:
        raise SystemExit(f"orch: cannot place the gang: {decision.wait[0].reason}")
    return list(decision.place[0].nodes)


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
    assignment = choose_nodes(spec, plan, ray.nodes())
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
