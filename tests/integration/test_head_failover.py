"""The control plane survives its own failures on an embedded cluster with GCS fault tolerance
(`orch up --ha`: a real redis-server backs the GCS, as in the KubeRay manifests).

- The GCS process is killed mid-training and restarted: the job **continues without a restart**
  (same attempt, no step lost or repeated), the worker raylets and the controller actor are the
  same processes as before.
- The whole head is killed (GCS, head raylet, and with it the controller actor and the job's
  runner, which owns the training workers): once the head is started again, Ray restores the
  detached controller actor from Redis (a new process), which finds the runner gone and
  **resumes the job from its last checkpoint** on the same worker nodes, which never left.

The time without progress of each is measured by bench/bench_failover.py (bench/RESULTS.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.failover import ROOT, Drills
from orchestrator.cluster.head import kill_head

pytestmark = pytest.mark.slow

COLD = "fault_tolerance.warm_restart=false"


@pytest.fixture(scope="module")
def ha_plane(tmp_path_factory):
    """`orch up --ha` under a private ORCH_HOME; this process never becomes a Ray driver (a driver
    attached to the head raylet would die with it)."""
    home = tmp_path_factory.mktemp("orch_home_ha")
    # fails at step 8 of 22; warm restart off: what is tested is the control plane's recovery, and the warm
    # workers a job prestarts compete with training on this machine's 2 cores
    os.environ["ORCH_WARM_POOL"] = "0"  # (as the other modules' clusters: tests/integration/conftest.py)
    drills = Drills(home, ["phases.0.tokens=20000", "checkpoint.interval={steps: 5}", COLD])
    drills.up()
    try:
        info = drills.cluster.load()
        assert info.redis_port and (home / "redis" / "redis.pid").exists()
        yield drills
    finally:
        drills.down()
    assert not (home / "redis" / "redis.pid").exists()  # orch down stops its redis-server too


def states_of(plane, job_id):
    return [t["to_state"] for t in plane.store.transitions(job_id)]


def test_a_killed_gcs_comes_back_and_training_continues_without_a_restart(ha_plane):
    result = ha_plane.gcs_kill()
    job = result.job
    assert job["state"] == "succeeded", job["message"]
    assert states_of(ha_plane, job["id"]) == ["queued", "placing", "running", "succeeded"]
    assert job["attempt"] == 1 and job["restarts"] == 0
    steps = [m["step"] for m in ha_plane.store.metrics(job["id"])]
    assert steps == list(range(1, job["total_steps"] + 1))
    assert result.controller_pids[0] == result.controller_pids[1]  # the same controller process throughout
    assert result.worker_nodes_alive


def test_a_lost_head_comes_back_and_the_job_resumes_from_its_checkpoint(ha_plane):
    started = len([e for e in ha_plane.store.events(limit=100_000) if e["kind"] == "controller.started"])
    result = ha_plane.head_loss()
    job = result.job
    assert job["state"] == "succeeded", job["message"]
    states = states_of(ha_plane, job["id"])
    assert states[:3] == ["queued", "placing", "running"] and "recovering" in states and states[-1] == "succeeded"
    assert job["attempt"] == 2 and job["restarts"] == 1
    resumed = ha_plane.store.metrics_of_attempt(job["id"], 2)
    assert resumed[0]["resumed_from"] >= 5 and resumed[0]["step"] == resumed[0]["resumed_from"] + 1
    resumed_from = resumed[0]["resumed_from"]
    steps = [m["step"] for m in ha_plane.store.metrics(job["id"])]
    # every step after the checkpoint was trained and recorded by attempt 2; of attempt 1, only rows the
    # runner still buffered when it died with the head may be missing, and never of a step up to a commit
    # it had recorded (control/step_log.py writes the rows first): at most those between the last recorded
    # commit and a checkpoint that reached storage but not yet the store
    missing = set(range(1, job["total_steps"] + 1)) - set(steps)
    recovering = next(t["at"] for t in ha_plane.store.transitions(job["id"]) if t["to_state"] == "recovering")
    recorded = max(
        (
            e["data"]["step"]
            for e in ha_plane.store.events(job["id"], limit=100_000)
            if e["kind"] == "checkpoint.committed" and e["at"] < recovering
        ),
        default=0,
    )
    assert missing <= set(range(recorded + 1, resumed_from + 1)), (missing, recorded, resumed_from)
    assert [s for s in steps if s > resumed_from] == list(range(resumed_from + 1, job["total_steps"] + 1))
    assert result.controller_pids[0] != result.controller_pids[1]  # restored by Ray as a new process
    events = ha_plane.store.events(limit=100_000)
    assert len([e for e in events if e["kind"] == "controller.started"]) >= started + 1  # restored
    assert result.worker_nodes_alive  # the worker raylets rode out the head's absence


def test_a_controller_away_from_the_head_rides_out_a_head_loss(ha_plane, tmp_path):
    """`orch controller --in-process` (a controller that is not an actor on the head) outlives a head loss
    that ends within Ray's GCS reconnect window (RAY_gcs_rpc_server_reconnect_timeout_s, 60 s): once the
    head is back it keeps the lease (the state store never went away) and launches the next job through
    its connection. (A longer outage ends the process with status 1, from Ray: "Failed to connect to GCS
    within 60 seconds"; its supervisor restarts it.)"""
    kill_actor = "from bench.failover import remove_controller_actor; remove_controller_actor()"
    subprocess.run(
        [sys.executable, "-c", kill_actor], env=ha_plane.env, cwd=ROOT, check=True, timeout=120, capture_output=True
    )
    log = tmp_path / "controller.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "controller",
                "--address",
                ha_plane.cluster.load().address,
                "--in-process",
                "--lease-ttl",
                "5",
            ],
            env={**ha_plane.env, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def alive() -> None:
        assert proc.poll() is None, f"the controller exited ({proc.returncode}):\n{log.read_text()[-3000:]}"

    try:
        deadline = time.time() + 120
        while "orch controller: leading" not in log.read_text():
            alive()
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        holder = ha_plane.leaders()[-1]["data"]["holder"]
        assert holder.endswith(f":{proc.pid}")
        kill_head(ha_plane.cluster)
        time.sleep(3)
        ha_plane.cluster.start_head()
        job = ha_plane.wait_job(
            ha_plane.submit(["phases.0.tokens=8000", COLD]), lambda j: j["state"] in ("succeeded", "failed")
        )
        alive()
        assert job["state"] == "succeeded", job["message"]
        assert ha_plane.leaders()[-1]["data"]["holder"] == holder  # the lease never left it
    finally:
        proc.kill()
        proc.wait(timeout=30)
