"""The control plane for real: an embedded Ray cluster of several raylets, the detached controller,
job runners and Ray Train gangs. No mock of Ray anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from orchestrator.control.client import ControlPlane
from tests.conftest import V3_SPEC

pytestmark = pytest.mark.slow

SHORT = ["phases.0.tokens=12000"]  # about 14 steps of the local miniature


def wait_for(plane: ControlPlane, job_id: str, states: set[str], timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = plane.store.get_job(job_id)
        if job["state"] in states:
            return job
        time.sleep(0.5)
    raise AssertionError(f"{job_id} still {plane.store.get_job(job_id)['state']} after {timeout} s; "
                         f"events: {[e['message'] for e in plane.store.events(job_id)]}")


def states_of(plane: ControlPlane, job_id: str) -> list[str]:
    return [t["to_state"] for t in plane.store.transitions(job_id)]


def orch(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "ORCH_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_submit_runs_to_success(plane):
    job = plane.submit(str(V3_SPEC), "local", SHORT)
    done = wait_for(plane, job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done["message"]
    assert states_of(plane, job["id"]) == ["queued", "placing", "running", "succeeded"]
    metrics = plane.store.metrics(job["id"])
    assert [m["step"] for m in metrics] == list(range(1, done["total_steps"] + 1))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert done["assignment"] == ["node-1", "node-2"]  # the on-demand pool first, then spot
    kinds = [e["kind"] for e in plane.store.events(job["id"])]
    assert kinds[:3] == ["job.submitted", "job.placed", "job.running"] and kinds[-1] == "job.succeeded"
    assert plane.log_path(job["id"]).read_text().count('"step"') == done["total_steps"]


def test_the_ledger_agrees_with_wall_clock_time_times_devices(plane):
    from orchestrator.ledger.report import cost_report

    job = plane.store.list_jobs()[0]
    assert job["state"] == "succeeded"
    placed = next(t["at"] for t in plane.store.transitions(job["id"]) if t["to_state"] == "placing")
    released = next(t["at"] for t in plane.store.transitions(job["id"]) if t["to_state"] == "succeeded")
    wall_device_hours = job["world_size"] * (released - placed) / 3600
    report = cost_report(plane.store, job["id"])
    hours = report["gpu_hours"]
    assert hours["total"] == pytest.approx(wall_device_hours, rel=0.01)  # the stated margin: 1%
    assert hours["productive"] + hours["checkpoint"] + hours["queued"] == pytest.approx(hours["total"], rel=1e-9)
    steps = plane.store.metrics(job["id"])
    stepping = job["world_size"] * sum(m["step_time_s"] for m in steps) / 3600
    # productive time is the steps plus the gaps between them: from the first step's start to the last
    # step's end, less checkpoint stalls (exact, whatever the machine's load)
    first, last = steps[0], steps[-1]
    span = job["world_size"] * (last["wall_time"] - (first["wall_time"] - first["step_time_s"])) / 3600
    assert stepping <= hours["productive"] + 1e-9 and hours["productive"] <= span + 1e-9
    assert 0 < report["goodput"] < 1 and hours["queued"] > 0  # the gang's start-up is held time too
    # priced per pool: node-1 on-demand at $2, node-2 spot at $0.80 (the local profile's prices)
    assert report["by_pool"]["local-spot"]["cost_usd"] == pytest.approx(0.8 * report["by_pool"]["local-spot"]["gpu_hours"])
    assert report["cost_usd"] == pytest.approx(2.0 * hours["total"] / 2 + 0.8 * hours["total"] / 2, rel=1e-6)
    cli = orch("cost", job["id"], "--json", home=plane.home)
    assert cli.returncode == 0 and '"goodput"' in cli.stdout


def test_cli_lists_and_shows_jobs(plane):
    listing = orch("list", "--json", home=plane.home)
    assert listing.returncode == 0, listing.stderr
    assert '"state": "succeeded"' in listing.stdout
    job_id = plane.store.list_jobs()[0]["id"]
    status = orch("status", job_id[:12], home=plane.home)
    assert status.returncode == 0 and "placing -> running" in status.stdout.replace("  ", " ") or "running" in status.stdout
    events = orch("events", job_id, home=plane.home)
    assert "job.succeeded" in events.stdout


def test_bad_spec_is_refused_and_nothing_is_enqueued(plane):
    before = len(plane.store.list_jobs())
    result = orch("submit", str(V3_SPEC), "--profile", "local", "--set", "parallelism.expert=3", home=plane.home)
    assert result.returncode == 2 and "parallelism.expert" in result.stderr and "Traceback" not in result.stderr
    too_big = orch("submit", str(V3_SPEC), home=plane.home)
    assert too_big.returncode == 2
    assert "2048 devices" in too_big.stderr and "--profile local" in too_big.stderr
    assert len(plane.store.list_jobs()) == before


def test_second_job_waits_for_the_gang_then_runs(plane):
    first = plane.submit(str(V3_SPEC), "local", SHORT)
    second = plane.submit(str(V3_SPEC), "local", SHORT)
    wait_for(plane, first["id"], {"running"})
    waiting = plane.store.get_job(second["id"])
    assert waiting["state"] == "queued"
    deadline = time.time() + 30
    while not plane.store.get_job(second["id"])["message"] and time.time() < deadline:
        time.sleep(0.5)
    assert "free" in plane.store.get_job(second["id"])["message"]  # the reason, with numbers
    assert wait_for(plane, first["id"], {"succeeded", "failed"})["state"] == "succeeded"
    assert wait_for(plane, second["id"], {"succeeded", "failed"})["state"] == "succeeded"
    first_done = plane.store.get_job(first["id"])["ended_at"]
    assert plane.store.get_job(second["id"])["started_at"] >= first_done


def test_cancel_a_running_job(plane):
    job = plane.submit(str(V3_SPEC), "local", ["phases.0.tokens=200000"])
    wait_for(plane, job["id"], {"running"})
    result = orch("cancel", job["id"], home=plane.home)
    assert result.returncode == 0, result.stderr
    done = wait_for(plane, job["id"], {"cancelled", "failed", "succeeded"}, timeout=120)
    assert done["state"] == "cancelled"
    assert done["step"] < done["total_steps"]
    assert any(e["kind"] == "job.cancel_requested" and e["actor"].startswith("user:")
               for e in plane.store.events(job["id"]))


def test_killing_the_controller_loses_nothing(plane):
    import ray

    from orchestrator.control.service import get_controller

    job = plane.submit(str(V3_SPEC), "local", ["phases.0.tokens=30000"])
    wait_for(plane, job["id"], {"running"})
    started_before = len([e for e in plane.store.events() if e["kind"] == "controller.started"])
    from orchestrator.ledger.report import cost_report

    def finished_costs():
        return {r["job"]: (r["gpu_hours"], r["cost_usd"]) for r in cost_report(plane.store)["per_job"]
                if r["state"] in ("succeeded", "cancelled", "failed")}

    before = finished_costs()
    ray.kill(get_controller(), no_restart=False)  # Ray restarts it; it must resume from the store
    done = wait_for(plane, job["id"], {"succeeded", "failed"})
    after = finished_costs()
    assert {k: after[k] for k in before} == before  # no recorded hour lost or changed
    assert done["state"] == "succeeded"
    assert len([e for e in plane.store.events() if e["kind"] == "controller.started"]) == started_before + 1
    assert states_of(plane, job["id"]) == ["queued", "placing", "running", "succeeded"]
    steps = [m["step"] for m in plane.store.metrics(job["id"])]
    assert steps == list(range(1, done["total_steps"] + 1))  # no step lost while the controller was down


def test_priority_preemption_checkpoints_requeues_and_resumes(plane):
    low = plane.submit(str(V3_SPEC), "local", ["phases.0.tokens=45000", "checkpoint.interval={steps: 5}"])
    low_running = wait_for(plane, low["id"], {"running"})
    deadline = time.time() + 120
    while plane.store.get_job(low["id"])["step"] < 8 and time.time() < deadline:
        time.sleep(0.5)
    high = plane.submit(str(V3_SPEC), "local", SHORT + ["priority=50"])
    assert wait_for(plane, high["id"], {"succeeded", "failed"})["state"] == "succeeded"
    low_states = states_of(plane, low["id"])
    assert low_states[:6] == ["queued", "placing", "running", "checkpointing", "preempted", "queued"]
    done = wait_for(plane, low["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded" and done["attempt"] == 2
    preempted_at = next(t for t in plane.store.transitions(low["id"]) if t["to_state"] == "preempted")["reason"]
    step_saved = int(preempted_at.split()[-1])
    second = [e for e in plane.store.events(low["id"]) if e["kind"] == "checkpoint.committed"]
    assert any(e["data"]["step"] == step_saved for e in second)  # it checkpointed before stopping
    emergency = [e for e in plane.store.events(low["id"]) if e["kind"] == "checkpoint.emergency"]
    assert emergency and emergency[0]["data"] == {"step": step_saved, "committed": True, "deadline": None}
    assert plane.store.get_job(high["id"])["started_at"] > low_running["started_at"]
    log = plane.log_path(low["id"]).read_text()
    assert f'"step": {step_saved + 1},' in log  # attempt 2 resumed after the saved step, not from step 1


def test_a_team_past_its_budget_gets_no_new_placements(plane):
    result = orch("budget", "pretrain", "--gpu-hours", "0.001", home=plane.home)
    assert result.returncode == 0, result.stderr
    job = plane.submit(str(V3_SPEC), "local", SHORT)
    deadline = time.time() + 30
    while "budget" not in (plane.store.get_job(job["id"])["message"] or "") and time.time() < deadline:
        time.sleep(0.5)
    waiting = plane.store.get_job(job["id"])
    assert waiting["state"] == "queued" and "team pretrain budget" in waiting["message"]
    assert any(e["kind"] == "budget.exceeded" for e in plane.store.events(job["id"]))
    warnings = [e for e in plane.store.events() if e["kind"] == "budget.warning" and e["data"]["team"] == "pretrain"]
    assert [w["data"]["threshold"] for w in warnings] == [0.8, 1.0]  # each threshold recorded once
    plane.cancel(job["id"])
    assert wait_for(plane, job["id"], {"cancelled"}, timeout=30)["state"] == "cancelled"
    plane.store.set_team("pretrain", budget_gpu_hours=None)


def test_losing_a_node_mid_training_recovers_on_a_spare_from_the_checkpoint(plane):
    """Last in the module: it kills node-2 (and restarts it at the end)."""
    from orchestrator.ledger.report import cost_report
    from orchestrator.spec import load_spec
    from orchestrator.train.reference import ReferenceTrainer

    overrides = ["phases.0.tokens=30000", "checkpoint.interval={steps: 5}"]
    job = plane.submit(str(V3_SPEC), "local", overrides)
    wait_for(plane, job["id"], {"running"})
    deadline = time.time() + 120
    while plane.store.get_job(job["id"])["step"] < 8 and time.time() < deadline:
        time.sleep(0.3)
    listing = orch("nodes", "list", "--json", home=plane.home)
    assert listing.returncode == 0 and job["id"] in listing.stdout
    drill = orch("nodes", "preempt", "node-2", home=plane.home)  # no notice: an abrupt loss
    assert drill.returncode == 0, drill.stderr
    try:
        done = wait_for(plane, job["id"], {"succeeded", "failed"}, timeout=400)
        assert done["state"] == "succeeded", done["message"]
        states = states_of(plane, job["id"])
        assert states[:3] == ["queued", "placing", "running"] and "recovering" in states
        assert done["restarts"] == 1 and done["attempt"] == 2
        assert done["assignment"] == ["node-1", "node-3"]  # the spare took the lost node's place
        metrics = plane.store.metrics(job["id"])
        assert [m["step"] for m in metrics] == list(range(1, done["total_steps"] + 1))
        assert metrics[-1]["attempt"] == 2 and metrics[0]["attempt"] == 1
        spec = load_spec(V3_SPEC, profile="local", overrides=overrides)
        expected = [m["loss"] for m in ReferenceTrainer(spec, data_parallel=2).train(done["total_steps"])]
        for m, want in zip(metrics, expected):
            assert m["loss"] == pytest.approx(want, rel=1e-4), f"step {m['step']}"
        hours = cost_report(plane.store, job["id"])["gpu_hours"]
        assert hours["recovery"] > 0 and hours["productive"] > 0
        kinds = [e["kind"] for e in plane.store.events(limit=100_000)]
        assert "node.lost" in kinds and "job.recovering" in kinds
        # the spare was used: the hot-spare policy started a new one in the spare pool
        provisioned = [e for e in plane.store.events(limit=100_000) if e["kind"] == "node.provisioned"]
        assert provisioned and provisioned[0]["data"]["pool"] == "local-spare"
        assert any(n.name == provisioned[0]["data"]["nodes"][0] for n in plane.cluster.load().nodes)
    finally:
        plane.cluster.start_node("node-2")


def test_a_notice_checkpoints_in_time_and_loses_no_step(plane):
    """After the node-loss test (node-2 is back): a 20 s notice on node-2, then its loss and replacement.
    The job saves the step in progress before the node goes, restarts from exactly that step and
    trains no step twice."""
    from orchestrator.ledger.report import cost_report

    job = plane.submit(str(V3_SPEC), "local", ["phases.0.tokens=30000", "checkpoint.interval={steps: 50}"])
    wait_for(plane, job["id"], {"running"})
    deadline = time.time() + 120
    while plane.store.get_job(job["id"])["step"] < 6 and time.time() < deadline:
        time.sleep(0.3)
    drill = orch("nodes", "preempt", "node-2", "--notice", "20", "--replace", home=plane.home)
    assert drill.returncode == 0, drill.stderr
    assert "told to checkpoint within 20 s" in drill.stdout
    done = wait_for(plane, job["id"], {"succeeded", "failed"}, timeout=400)
    assert done["state"] == "succeeded", done["message"]
    assert done["restarts"] == 1 and "recovering" in states_of(plane, job["id"])
    events = plane.store.events(job["id"])
    emergency = [e for e in events if e["kind"] == "checkpoint.emergency"]
    assert emergency and "committed in time" in emergency[0]["message"]
    saved_at = emergency[0]["data"]["step"]
    metrics = plane.store.metrics(job["id"])
    first_attempt = [m["step"] for m in metrics if m["attempt"] == 1]
    second_attempt = [m["step"] for m in metrics if m["attempt"] == 2]
    assert first_attempt[-1] == saved_at and second_attempt[0] == saved_at + 1  # no step trained twice
    assert [m["step"] for m in metrics] == list(range(1, done["total_steps"] + 1))
    hours = cost_report(plane.store, job["id"])["gpu_hours"]
    assert hours["lost"] == 0 and hours["recovery"] > 0
    recovering = [t for t in plane.store.transitions(job["id"]) if t["to_state"] == "recovering"][0]
    assert "on notice" in recovering["reason"]
    assert "node-2" not in plane.store.cordoned_nodes()  # the replacement is a fresh node
