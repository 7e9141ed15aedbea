"""The cluster's warm pool (orchestrator/train/warm_pool.py) on a real embedded cluster started the way a
user starts it: `orch up` in a process that exits at once. When the controller takes the lead it asks
every node for a first attempt's processes, and a job's first attempt starts in them: its runner, Ray
Train's controller and all four ranks in processes older than the attempt. So each of the three runtime
environment strings the pool computed is the one Ray 2.60 gives that process (a string that differs by
one byte gets a new process), and the pool outlived the `orch up` that started the cluster: the
controller belongs to the keeper's Ray job (orchestrator/control/keeper.py), not to the exited one's, whose
idle prestarted processes Ray ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from orchestrator.cluster.embedded import KEEPER
from orchestrator.control.client import ControlPlane
from orchestrator.paths import STATE_URL_ENV
from orchestrator.train.warm_control import CONTROL_HOOK, CONTROLLER_PROCESSES
from orchestrator.train.warm_workers import HOOK, HOOK_ENV
from tests.conftest import V3_SPEC
from tests.integration.test_control_plane import wait_for

pytestmark = pytest.mark.slow

# the embedded cluster's nodes: the head, node-1 (on-demand) and node-2 (spot) with 2 device slots each,
# node-3 a spare (asked by a running job's rank 0, not by the pool)
POOL = {"head": {"runner": 1, "train controller": CONTROLLER_PROCESSES}, "node-1": {"rank": 2}, "node-2": {"rank": 2}}


def pool_processes() -> list[psutil.Process]:
    """This machine's Ray worker processes that run one of orch's warm hooks."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])  # Ray retitles its workers "ray::IDLE", "ray::<actor>"
            if (command.startswith("ray::") or "default_worker.py" in command) and proc.environ().get(HOOK_ENV) in (
                HOOK,
                CONTROL_HOOK,
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_for_idle_pool(count: int, timeout: float = 180) -> list[psutil.Process]:
    """Until ``count`` pool processes exist and none used CPU over a second: their imports are done."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        procs = pool_processes()
        if len(procs) >= count:
            try:
                before = [sum(p.cpu_times()[:2]) for p in procs]
                time.sleep(1.0)
                if all(sum(p.cpu_times()[:2]) - b < 0.05 for p, b in zip(procs, before)):
                    return procs
            except psutil.Error:
                continue
        time.sleep(0.5)
    raise AssertionError(f"{len(pool_processes())} warm pool processes idle, {count} expected")


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """The embedded cluster as `orch up` starts it (its process exits), then this process connects."""
    home = tmp_path_factory.mktemp("orch_home")
    os.environ["ORCH_HOME"] = str(home)
    os.environ.pop("ORCH_WARM_POOL", None)  # the default: on (other modules' clusters turn it off)
    up = subprocess.run(
        [sys.executable, "-m", "orchestrator", "up"], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert up.returncode == 0, up.stderr
    plane = ControlPlane(home=home)
    plane.connect(start=False)
    yield plane
    import ray

    ray.shutdown()
    plane.cluster.down()


def test_the_controller_belongs_to_the_keepers_ray_job(plane):
    import ray

    from orchestrator.control.service import get_controller

    assert plane.cluster.process_running(KEEPER)
    keeper = psutil.Process(next(s for s in plane.cluster.load().sessions if s.node == KEEPER).sid)
    # the state URL (a database password, with PostgreSQL) is in its environment, not its command line
    assert plane.state_url not in " ".join(keeper.cmdline()) and keeper.environ()[STATE_URL_ENV] == plane.state_url
    job = ray.get(get_controller().ping.remote(), timeout=60)["job"]
    assert job != ray.get_runtime_context().get_job_id()  # not this driver's: it connected after `orch up`
    alive = {j["JobID"] for j in ray._private.state.jobs() if not j["IsDead"]}
    assert job in alive  # the keeper's, alive although `orch up` exited


def test_a_first_attempt_starts_in_the_pool_the_controller_asked_for(plane):
    deadline = time.time() + 60
    while not (asked := [e for e in plane.store.events() if e["kind"] == "cluster.warm_pool"]):
        assert time.time() < deadline, "the controller asked for no warm pool"
        time.sleep(0.5)
    assert len(asked) == 1 and asked[0]["data"] == POOL, asked
    pool = wait_for_idle_pool(sum(n for node in POOL.values() for n in node.values()))
    pids = {p.pid for p in pool}

    # a restarted controller takes the lead again and finds the pool waiting: it asks for nothing more
    restart_controller(plane)
    assert len([e for e in plane.store.events() if e["kind"] == "cluster.warm_pool"]) == 1
    assert {p.pid for p in pool_processes()} == pids

    job = plane.submit(str(V3_SPEC), "local", ["phases.0.tokens=12000"])  # warm restart: the default
    done = wait_for(plane, job["id"], {"succeeded", "failed"}, timeout=300)
    assert done["state"] == "succeeded", done["message"]
    log = plane.log_path(job["id"]).read_text()
    assert re.search(r"attempt 1 start-up: workers starting \(.*the runner in a warm process\)", log), log
    assert re.search(r"attempt 1 start-up: training \(.*Ray Train's controller started in a warm process", log), log
    assert re.search(r"attempt 1 start-up: workers up \(.*4 of 4 ranks in warm processes\)", log), log
    # the attempt took the pool's processes: its own would be younger than the pool's and not among them
    assert len(pids - {p.pid for p in pool_processes()}) >= 1 + 4

    # what the attempt asked for its next one waits on the same nodes (its runner: a set on the head; its
    # rank 0: a rank per slot on the gang's nodes and the spare), recorded as the pool's parts are: a
    # controller that asks for the pool again (a restart, or its pass every few minutes) asks for nothing
    after_job = {p.pid for p in wait_for_idle_pool(1 + CONTROLLER_PROCESSES + 3 * 2)}
    restart_controller(plane)
    assert len([e for e in plane.store.events() if e["kind"] == "cluster.warm_pool"]) == 1
    assert {p.pid for p in pool_processes()} == after_job


def restart_controller(plane) -> None:
    """Kill the controller actor (Ray restarts it: it takes the lead again) and wait until the new one
    has finished asking for the pool, which it does off its reconcile loop."""
    import ray

    from orchestrator.control.service import get_controller

    old = ray.get(get_controller().ping.remote(), timeout=60)["pid"]
    ray.kill(get_controller(), no_restart=False)
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline, "the restarted controller did not ask for the pool"
        time.sleep(0.5)
        try:
            pong = ray.get(get_controller().ping.remote(), timeout=30)
        except (AttributeError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            continue  # between the kill and the restart
        if pong["pid"] != old and pong["pool_fills"] >= 1:
            return


def test_a_keeper_that_ends_is_started_again_and_takes_the_controller_into_its_job(plane):
    """Last in the module. With the keeper gone, its Ray job is finished and the controller's warm
    processes with it; the next process that connects starts a keeper, which replaces the controller
    (a finished job gets no more prestarted processes) and so gets a new pool."""
    import ray

    from orchestrator.control.service import get_controller

    keeper = next(s for s in plane.cluster.load().sessions if s.node == KEEPER)
    psutil.Process(keeper.sid).kill()
    old_job = ray.get(get_controller().ping.remote(), timeout=60)["job"]
    deadline = time.time() + 60
    while old_job not in {j["JobID"] for j in ray._private.state.jobs() if j["IsDead"]}:
        assert time.time() < deadline, "the keeper's job did not finish"
        time.sleep(0.5)
    pools = len([e for e in plane.store.events() if e["kind"] == "cluster.warm_pool"])
    connect = "from orchestrator.control.client import ControlPlane; ControlPlane().connect(start=False)"
    done = subprocess.run([sys.executable, "-c", connect], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    keeper_log = plane.home / "logs" / f"{KEEPER}.log"
    if not plane.cluster.process_running(KEEPER):
        sessions = [s for s in plane.cluster.load().sessions if s.node == KEEPER]
        states = {}
        for s in sessions:
            try:
                p = psutil.Process(s.sid)
                states[s.sid] = (p.status(), p.create_time(), s.started, p.ppid())
            except psutil.Error as e:
                states[s.sid] = repr(e)
        raise AssertionError(
            f"no keeper: {sessions} {states} stderr={done.stderr[-2000:]} log={keeper_log.read_text()[-4000:]}"
        )
    deadline, job = time.time() + 120, old_job
    while job == old_job:  # the new keeper connects, then replaces the controller
        assert time.time() < deadline, "the controller stayed in the finished job"
        time.sleep(1.0)
        try:
            job = ray.get(get_controller().ping.remote(), timeout=30)["job"]
        except (AttributeError, ray.exceptions.RayActorError):  # between the kill and the new one
            continue
    assert job in {j["JobID"] for j in ray._private.state.jobs() if not j["IsDead"]}
    deadline = time.time() + 120  # the new controller's first pass with no job active asks for it
    while len([e for e in plane.store.events() if e["kind"] == "cluster.warm_pool"]) == pools:
        assert time.time() < deadline, "the new controller asked for no warm pool"
        time.sleep(0.5)
