"""Leader election through the state store: two controllers, one leads, the other waits; the
leader is killed (SIGKILL) and the standby takes over once the lease has expired, losing and
doubling nothing. On SQLite and on the session's PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.clock import ManualClock
from orchestrator.spec.loader import load_spec
from orchestrator.state.lease import Lease
from orchestrator.state.store import StateStore
from tests.conftest import MINIMAL_SPEC, ROOT

TTL_S = 2.0


SPEC = load_spec(MINIMAL_SPEC).model_dump(mode="json")  # one pool, "local", as the helper's nodes


def job_row(job_id: str) -> dict:
    return {
        "id": job_id,
        "name": "minimal",
        "team": "research",
        "priority": 0,
        "spec": SPEC,
        "source": {},
        "world_size": 2,
        "nodes": 1,
        "devices_per_node": 2,
        "total_steps": 10,
    }


def test_the_lease_goes_to_one_candidate_and_passes_on_only_after_expiry(state_url):
    clock = ManualClock(100.0)
    store = StateStore(state_url, clock=clock)
    a, b = Lease(store, holder="a", ttl_s=10), Lease(store, holder="b", ttl_s=10)
    assert a.acquire() and not b.acquire()
    clock.advance(6)
    assert a.acquire() and not b.acquire()  # renewed at 106: valid to 116
    assert a.still_held()
    clock.advance(9)  # 115: past a's own margin (116 - 10/3), not yet expired for the others
    assert not a.still_held() and not b.acquire()
    clock.advance(1.5)  # 116.5: expired
    assert b.acquire() and b.current().term == 2 and b.current().holder == "b"
    assert not a.acquire() and a.term is None  # a's renewal fails: its term is over
    b.release()
    assert a.acquire() and a.current().term == 3  # a clean release hands over at once


def _spawn(url: str, runners, holder: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.elected_controller", url, str(runners), holder, str(TTL_S)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(predicate, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _leaders(store: StateStore) -> list[dict]:
    return [e for e in store.events() if e["kind"] == "controller.leader"]


@pytest.mark.slow
def test_killing_the_leader_hands_over_to_the_standby_with_no_lost_event(state_url, tmp_path):
    store = StateStore(state_url)
    runners = tmp_path / "runners"
    runners.mkdir()
    first = _spawn(state_url, runners, "controller-a")
    second = None
    try:
        _wait(lambda: _leaders(store), what="a leader")
        second = _spawn(state_url, runners, "controller-b")
        for i in range(6):
            store.insert_job(job_row(f"before-{i}"))
        _wait(lambda: all(j["state"] == "succeeded" for j in store.list_jobs()), what="the first jobs")
        for i in range(6):  # queued while the leader dies: the standby must pick them up
            store.insert_job(job_row(f"during-{i}"))
        first.send_signal(signal.SIGKILL)
        killed_at = time.time()
        first.wait(timeout=30)
        _wait(
            lambda: len(store.list_jobs()) == 12 and all(j["state"] == "succeeded" for j in store.list_jobs()),
            what="every job to finish under the new leader",
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    leaders = _leaders(store)
    assert [(e["data"]["holder"], e["data"]["term"]) for e in leaders] == [("controller-a", 1), ("controller-b", 2)]
    last_renewal_by_a = killed_at  # at the latest
    assert leaders[1]["at"] >= last_renewal_by_a - TTL_S  # b waited for a's lease to expire
    started_by = {e["job_id"]: e["data"]["started_by"] for e in store.events() if e["kind"] == "test.runner_done"}
    for job in store.list_jobs():
        history = [h["to_state"] for h in store.transitions(job["id"])]
        assert history == ["queued", "placing", "running", "succeeded"], (job["id"], history)
        assert job["attempt"] == 1 and job["restarts"] == 0
        expected = "controller-a" if job["id"].startswith("before") else None
        if expected:  # while a led, b launched nothing
            assert started_by[job["id"]] == expected
    placed = [e for e in store.events() if e["kind"] == "job.placed"]
    assert sorted(e["job_id"] for e in placed) == sorted(j["id"] for j in store.list_jobs())  # one each
