"""Soak: ten abrupt node losses in one run of a real job lose nothing (issue 19).

The embedded cluster of real raylets, the detached controller and Ray Train gangs, as in
test_control_plane.py. A node of the job's gang (each of its two nodes in turn) has its raylet killed
ten times, each time after the job has resumed and committed a checkpoint since the loss before; a
new raylet starts under the killed node's name at once, as `orch nodes preempt --replace` does. Ten
restarts take minutes on this machine, so the test is marked ``soak`` and left out of `make test`
(``make soak`` runs it); README's Limits gives the figures of its last run.
"""

from __future__ import annotations

import time

import pytest

from orchestrator.cluster.provider import RayNodeProvider
from orchestrator.control.node_ops import ask_ray_runner, preempt_drill
from tests.conftest import V3_SPEC

pytestmark = [pytest.mark.slow, pytest.mark.soak]

KILLS = 10
INTERVAL = 3  # steps between checkpoints: what one loss may cost at most
OVERRIDES = [
    "phases.0.tokens=100000",  # 117 steps of the local miniature: room for ten losses and their rework
    f"checkpoint.interval={{steps: {INTERVAL}}}",
    "fault_tolerance.max_restarts=20",
]


def wait_until(plane, job_id: str, done, what: str, timeout: float = 300.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = plane.store.get_job(job_id)
        if done(job):
            return job
        if job["state"] in ("failed", "cancelled"):
            raise AssertionError(f"{job_id} {job['state']} while waiting for {what}: {job['message']}")
        time.sleep(0.3)
    raise AssertionError(f"{job_id}: no {what} after {timeout} s (state {plane.store.get_job(job_id)['state']})")


def past_own_commit(plane, job: dict, attempt: int) -> bool:
    """``attempt`` runs and has committed a checkpoint of a step it trained itself."""
    if job["attempt"] != attempt or job["state"] != "running":
        return False
    steps = plane.store.metrics_of_attempt(job["id"], attempt)
    return bool(steps) and (job["last_checkpoint_step"] or 0) >= steps[0]["step"]


def test_ten_node_losses_in_one_run_lose_nothing(plane):
    from orchestrator.ledger.report import cost_report
    from orchestrator.spec.loader import load_spec
    from orchestrator.train.reference import ReferenceTrainer

    job = plane.submit(str(V3_SPEC), "local", OVERRIDES)
    job_id = job["id"]
    provider = RayNodeProvider(plane.store)
    for kill in range(KILLS):
        # the attempt trains and has committed a checkpoint of its own: the loss costs < INTERVAL steps
        attempt = kill + 1
        row = wait_until(
            plane, job_id, lambda j, a=attempt: past_own_commit(plane, j, a), f"attempt {attempt}'s commit"
        )
        victim = row["assignment"][kill % 2]
        # the raylet is killed and a new one starts under the node's name at once (`orch nodes preempt
        # --replace`): the job restarts while the node comes back, so each loss costs a few steps of progress
        preempt_drill(plane.store, provider, plane.cluster, victim, 0.0, True, "soak", ask_ray_runner)
    done = wait_until(plane, job_id, lambda j: j["state"] in ("succeeded",), "the end", timeout=600)
    assert done["restarts"] == KILLS and done["attempt"] == KILLS + 1

    # every step trained and recorded once, with the loss of an uninterrupted run
    metrics = plane.store.metrics(job_id)
    assert [m["step"] for m in metrics] == list(range(1, done["total_steps"] + 1))
    spec = load_spec(V3_SPEC, profile="local", overrides=OVERRIDES)
    expected = [m["loss"] for m in ReferenceTrainer(spec, data_parallel=2).train(done["total_steps"])]
    for m, want in zip(metrics, expected):
        assert m["loss"] == pytest.approx(want, rel=1e-4), f"step {m['step']} (attempt {m['attempt']})"

    # each attempt resumed from the newest commit before its loss: less than INTERVAL steps trained twice
    for attempt in range(2, KILLS + 2):
        first = plane.store.metrics_of_attempt(job_id, attempt)[0]
        before = [m["step"] for m in plane.store.metrics_of_attempt(job_id, attempt - 1)]
        assert first["step"] == first["resumed_from"] + 1
        assert 0 <= max(before) - first["resumed_from"] < INTERVAL + 1, (attempt, max(before), first["resumed_from"])

    # the ledger holds every second the gang was held, once
    moves = plane.store.transitions(job_id)
    placed = next(t["at"] for t in moves if t["to_state"] == "placing")
    ended = moves[-1]["at"]
    hours = cost_report(plane.store, job_id)["gpu_hours"]
    held = sum(i.device_hours for i in plane.store.intervals(job_id))
    assert hours["total"] == pytest.approx(held, rel=1e-9)
    assert hours["total"] <= done["world_size"] * (ended - placed) / 3600 * 1.001
    assert hours["recovery"] > 0 and hours["productive"] > 0
    assert {i.attempt for i in plane.store.intervals(job_id)} == set(range(1, KILLS + 2))
