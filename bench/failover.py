"""Control-plane failure drills on the embedded cluster, shared by the slow tests and the benchmark.

Each drill runs a real training job (the local miniature on 4 CPU workers, a checkpoint every 5
steps) on a cluster started with GCS fault tolerance (`orch up --ha`: a real redis-server), breaks
part of the control plane mid-training, brings it back as a supervisor would, and returns what
the job did and the *time without progress*: the gap between the last step finished before the
failure and the first step finished after it (for a job that restarts, the resumed attempt's
first step).

The process running a drill is not a Ray driver: every Ray call goes through `orch` commands in
subprocesses, because a driver attached to the head raylet dies with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cluster.embedded import EmbeddedCluster
from orchestrator.state.store import StateStore

ROOT = Path(__file__).parents[1]
SPEC = str(ROOT / "jobs" / "v3_pretrain.yaml")
OVERRIDES = ["phases.0.tokens=30000", "checkpoint.interval={steps: 5}"]
FAIL_AT_STEP = 8


@dataclass
class DrillResult:
    job: dict
    failed_at: float
    restored_at: float
    stall_s: float  # time without progress
    steps_redone: int  # steps of attempt 1 after the checkpoint attempt 2 resumed from
    controller_pids: tuple[int, int]  # the controller actor's process before and after
    worker_nodes_alive: bool


class Drills:
    def __init__(self, home: Path, overrides: list[str] | None = None):
        self.home = Path(home)
        self.overrides = overrides or OVERRIDES  # the drills' job (the tests train a shorter one)
        self.cluster = EmbeddedCluster(self.home)
        self.env = {**os.environ, "ORCH_HOME": str(self.home), "PYTHONPATH": str(ROOT)}
        self.env.pop("ORCH_STATE_URL", None)
        self._store: StateStore | None = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(f"sqlite:///{self.home / 'state.db'}")
        return self._store

    def orch(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"orch {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
        return out

    def up(self) -> None:
        self.orch("up", "--ha")

    def down(self) -> None:
        self.orch("down")

    def submit(self, overrides: list[str] | None = None) -> str:
        sets = [a for o in (overrides or self.overrides) for a in ("--set", o)]
        out = self.orch("submit", SPEC, "--profile", "local", *sets, "--detach")
        return re.search(r"submitted (\S+):", out.stdout)[1]

    def wait_job(self, job_id: str, done, timeout: float = 400.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.store.get_job(job_id)
            if done(job):
                return job
            time.sleep(0.2)
        raise AssertionError(
            f"{job_id}: timed out in state {self.store.get_job(job_id)['state']}; events: "
            f"{[e['message'] for e in self.store.events(job_id)][-8:]}"
        )

    def controller_pids(self) -> list[int]:
        return [e["data"]["pid"] for e in self.store.events(limit=100_000) if e["kind"] == "controller.started"]

    def wait_controller(self, known: int, timeout: float = 120.0) -> int:
        """The pid of the controller actor started after the first ``known`` ones (a restored actor)."""
        deadline = time.time() + timeout
        while len(self.controller_pids()) <= known:
            if time.time() > deadline:
                raise AssertionError("the controller actor was not restored")
            time.sleep(0.2)
        return self.controller_pids()[-1]

    def worker_nodes_alive(self) -> bool:
        rows = json.loads(self.orch("nodes", "list", "--json").stdout)
        health = {r["name"]: r["health"] for r in rows}
        return all(health.get(n.name) == "alive" for n in self.cluster.load().nodes)

    def stall(self, job_id: str, failed_at: float) -> tuple[float, int]:
        """Time without progress across ``failed_at``, and the steps trained twice."""
        first = self.store.metrics_of_attempt(job_id, 1)
        when = [m.get("wall_time", m["at"]) for m in first]
        before = [w for w in when if w <= failed_at]
        resumed = self.store.metrics_of_attempt(job_id, 2)
        later = [w for w in when if w > failed_at] + [m.get("wall_time", m["at"]) for m in resumed[:1]]
        stall = min(later) - max(before) if before and later else float("nan")
        redone = max(m["step"] for m in first) - (resumed[0].get("resumed_from") or 0) if resumed else 0
        return stall, redone

    def _training(self) -> tuple[str, int]:
        job_id = self.submit()
        self.wait_job(job_id, lambda j: j["state"] == "running" and j["step"] >= FAIL_AT_STEP)
        return job_id, self.controller_pids()[-1]

    def _result(self, job_id: str, failed_at: float, restored_at: float, pids: tuple[int, int]) -> DrillResult:
        done = self.wait_job(job_id, lambda j: j["state"] in ("succeeded", "failed"))
        stall, redone = self.stall(job_id, failed_at)
        return DrillResult(done, failed_at, restored_at, stall, redone, pids, self.worker_nodes_alive())

    def gcs_kill(self, down_s: float = 3.0) -> DrillResult:
        """SIGKILL the GCS mid-training and start it again ``down_s`` later: the job should carry on."""
        from orchestrator.cluster.head import kill_gcs, restart_gcs

        job_id, pid = self._training()
        known = len(self.controller_pids())
        image = kill_gcs(self.cluster)
        failed_at = time.time()
        time.sleep(down_s)
        restart_gcs(self.cluster, image)
        restored_at = time.time()
        result = self._result(job_id, failed_at, restored_at, (pid, pid))
        if len(self.controller_pids()) != known:  # a new controller process: it was not kept
            result.controller_pids = (pid, self.controller_pids()[-1])
        return result

    def head_loss(self, down_s: float = 3.0) -> DrillResult:
        """SIGKILL the whole head (GCS, head raylet, the controller and runner actors on it) mid-training
        and start the head again ``down_s`` later: Ray restores the controller actor from Redis and
        the job resumes from its checkpoint."""
        from orchestrator.cluster.head import kill_head

        job_id, pid = self._training()
        known = len(self.controller_pids())
        kill_head(self.cluster)
        failed_at = time.time()
        time.sleep(down_s)
        self.cluster.start_head()
        restored_at = time.time()
        new_pid = self.wait_controller(known)
        return self._result(job_id, failed_at, restored_at, (pid, new_pid))

    # ------------------------------------------------------------------ controller leader failover

    def leaders(self) -> list[dict]:
        return [e for e in self.store.events(limit=100_000) if e["kind"] == "controller.leader"]

    def controller_failover(self, ttl_s: float = 15.0) -> dict:
        """A job trains; the Ray actor controller is removed and two `orch controller --in-process`
        replicas take over (one leads); the leader is SIGKILLed. Seconds from the kill to the
        standby leading, the job's stall, and the job's end (which only a leader can record)."""
        job_id = self.submit(["phases.0.tokens=90000", "checkpoint.interval={steps: 5}"])
        self.wait_job(job_id, lambda j: j["state"] == "running" and j["step"] >= 3)
        kill_actor = "from bench.failover import remove_controller_actor; remove_controller_actor()"
        out = subprocess.run(
            [sys.executable, "-c", kill_actor],
            env=self.env,
            cwd=ROOT,
            check=False,
            timeout=120,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise AssertionError(f"could not remove the controller actor: {out.stderr[-2000:]}")
        address = self.cluster.load().address
        cmd = [
            sys.executable,
            "-m",
            "orchestrator",
            "controller",
            "--address",
            address,
            "--in-process",
            "--lease-ttl",
            str(ttl_s),
        ]
        procs = [
            subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(2)
        ]
        try:
            deadline = time.time() + 4 * ttl_s + 60
            while not any(e["data"]["holder"] != "ray-actor:orch-controller" for e in self.leaders()):
                if time.time() > deadline:
                    raise AssertionError("no in-process controller took the lease")
                time.sleep(0.2)
            leader = self.leaders()[-1]["data"]["holder"]
            victim = next(p for p in procs if leader.endswith(f":{p.pid}"))
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            while self.leaders()[-1]["data"]["holder"] == leader and time.time() < deadline + 60:
                time.sleep(0.1)
            new_leader = self.leaders()[-1]
            done = self.wait_job(job_id, lambda j: j["state"] in ("succeeded", "failed"))
            stall, redone = self.stall(job_id, killed_at)
            return {
                "ttl_s": ttl_s,
                "takeover_s": new_leader["at"] - killed_at,
                "job": done,
                "stall_s": stall,
                "steps_redone": redone,
                "leaders": [(e["data"]["holder"], e["data"]["term"]) for e in self.leaders()],
            }
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)


def remove_controller_actor() -> None:
    """Kill the detached controller actor for good (run in a subprocess: it becomes a Ray driver)."""
    from orchestrator.cluster.auth import prime_auth_env
    from orchestrator.state.store import orch_home

    prime_auth_env(orch_home())  # before Ray is imported: Ray reads its auth settings at import
    from orchestrator.control.client import ControlPlane

    ControlPlane().connect(start=False)
    import ray

    from orchestrator.control.service import get_controller

    ray.kill(get_controller(), no_restart=True)
