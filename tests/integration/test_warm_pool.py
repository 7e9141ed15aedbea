"""The cluster's warm pool (orchestrator/train/warm_pool.py) on a real embedded cluster: when the
controller takes the lead it asks every node for a first attempt's processes, and a job's first
attempt starts in them. Its runner, Ray Train's controller and all four ranks started in processes
older than the attempt: each of the three runtime environment strings the pool computed is the one
Ray 2.60 gives that process (a string that differs by one byte gets a new process)."""

from __future__ import annotations

import re
import time

import psutil
import pytest

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


def test_a_first_attempt_starts_in_the_pool_the_controller_asked_for(plane):
    deadline = time.time() + 60
    while not (asked := [e for e in plane.store.events() if e["kind"] == "cluster.warm_pool"]):
        assert time.time() < deadline, "the controller asked for no warm pool"
        time.sleep(0.5)
    assert len(asked) == 1 and asked[0]["data"] == POOL, asked
    pool = wait_for_idle_pool(sum(n for node in POOL.values() for n in node.values()))
    pids = {p.pid for p in pool}

    job = plane.submit(str(V3_SPEC), "local", ["phases.0.tokens=12000"])  # warm restart: the default
    done = wait_for(plane, job["id"], {"succeeded", "failed"}, timeout=300)
    assert done["state"] == "succeeded", done["message"]
    log = plane.log_path(job["id"]).read_text()
    assert re.search(r"attempt 1 start-up: workers starting \(.*the runner in a warm process\)", log), log
    assert re.search(r"attempt 1 start-up: training \(.*Ray Train's controller started in a warm process", log), log
    assert re.search(r"attempt 1 start-up: workers up \(.*4 of 4 ranks in warm processes\)", log), log
    # the attempt took the pool's processes: its own would be younger than the pool's and not among them
    assert len(pids - {p.pid for p in pool_processes()}) >= 1 + 4
