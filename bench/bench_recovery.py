"""Recovery time on the embedded cluster: from a node's loss to the first step after resume.

A real job (the local miniature, PP2 x EP2 x DP2 on 4 CPU workers) trains with a checkpoint every 5
steps; its spot node's raylet is killed mid-training (abruptly, and again with a 20 s notice). The
restart is split with the timestamps the control plane and the trainer record: detect (loss ->
recovering), re-place (-> placing on the spare), start (workers up, engine built), restore
(checkpoint loaded), warm-up (the first step after resume).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.harness import Section
from orchestrator.control.client import ControlPlane

COMMAND = "python -m bench.run_all recovery  (bench/bench_recovery.py)"
SPEC = str(Path(__file__).parents[1] / "jobs" / "v3_pretrain.yaml")
OVERRIDES = ["phases.0.tokens=40000", "checkpoint.interval={steps: 5}"]


def _wait(plane, job_id, done, timeout=600.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = plane.store.get_job(job_id)
        if done(job):
            return job
        time.sleep(0.2)
    raise RuntimeError(f"{job_id}: timed out in state {plane.store.get_job(job_id)['state']}")


def _one(plane: ControlPlane, notice: float) -> dict:
    from orchestrator.control.node_ops import ask_ray_runner, preempt_drill
    from orchestrator.cluster.provider import RayNodeProvider

    job = plane.submit(SPEC, "local", OVERRIDES)
    _wait(plane, job["id"], lambda j: j["state"] == "running" and j["step"] >= 12)
    victim = plane.store.get_job(job["id"])["assignment"][1]
    lost_at = time.time() + notice
    preempt_drill(plane.store, RayNodeProvider(plane.store), plane.cluster, victim, notice, False, "bench",
                  ask_ray_runner)
    done = _wait(plane, job["id"], lambda j: j["state"] in ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["message"]
    moves = plane.store.transitions(job["id"])
    recovering = next(t["at"] for t in moves if t["to_state"] == "recovering")
    placing = next(t["at"] for t in moves if t["to_state"] == "placing" and t["at"] >= recovering)
    rows = plane.store.metrics_of_attempt(job["id"], 2)
    first = rows[0]
    attempt_one = [m["step"] for m in plane.store.metrics_of_attempt(job["id"], 1)]
    plane.cluster.start_node(victim)
    plane.store.set_cordon(victim, False, "bench: node back", "bench")
    return {"notice": notice, "lost_at": lost_at, "recovering": recovering, "placing": placing,
            "started": first["ready_at"] - first["restore_s"], "ready": first["ready_at"],
            "first_step": first.get("wall_time", first["at"]), "restore_s": first["restore_s"],
            "resumed_from": first["resumed_from"], "last_step_before": max(attempt_one),
            "stopped_at": recovering if notice else lost_at}


def run() -> Section:
    home = Path(tempfile.mkdtemp(prefix="orch-bench-recovery-"))
    os.environ["ORCH_HOME"] = str(home)
    plane = ControlPlane(home=home)
    plane.connect(start=True)
    try:
        runs = [_one(plane, 0.0), _one(plane, 20.0)]
    finally:
        import ray

        ray.shutdown()
        plane.cluster.down()
    body = ["The local miniature on 4 CPU workers (3 raylets + head on this machine), checkpoint every 5 steps;",
            "the spot node's raylet is killed after step 12. Seconds:", "",
            "| loss | detect | re-place | start workers + build engines | restore checkpoint | first step | "
            "node loss -> first step | steps trained twice |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        origin = r["lost_at"] if not r["notice"] else r["recovering"]
        detect = r["recovering"] - r["lost_at"] if not r["notice"] else 0.0
        label = "abrupt (no notice)" if not r["notice"] else f"{r['notice']:.0f} s notice (saved, then restarted)"
        body.append(f"| {label} | {detect:.1f} | {r['placing'] - r['recovering']:.1f} | "
                    f"{r['started'] - r['placing']:.1f} | {r['restore_s']:.1f} | {r['first_step'] - r['ready']:.1f} | "
                    f"{r['first_step'] - origin:.1f} | {r['last_step_before'] - (r['resumed_from'] or 0)} |")
    body += ["", "With notice the clock starts when the job, having saved, is handed back for restart (the node "
             "itself goes at the end of the notice); detect is then zero by construction. 'Steps trained twice' "
             "is the work lost: steps of the first attempt after the checkpoint the second resumed from."]
    return Section("Recovery from a node loss (embedded cluster)", COMMAND, body)
