"""The ledger in the state store: intervals written with the transition that releases devices, the
cost report, and the Prometheus endpoint, all reading the same rows."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest

from orchestrator.clock import ManualClock
from orchestrator.forecast.prometheus import serve
from orchestrator.ledger.intervals import Interval
from orchestrator.ledger.report import cost_report
from orchestrator.lifecycle import JobState
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import MINIMAL_SPEC
from tests.helpers.job_rows import minimal_job_row


@pytest.fixture
def store(state_url):
    """On SQLite and on the session's PostgreSQL server."""
    store = StateStore(state_url, clock=ManualClock(1000.0))
    spec = load_spec(MINIMAL_SPEC)
    store.insert_job(minimal_job_row(spec))
    return store


def interval(category: str, start: float, end: float, node: str = "n1", price: float = 2.0) -> Interval:
    return Interval("job-1", 1, node, "local", "on-demand", 2, "cpu", "pre_training", category, start, end, price)


def test_intervals_are_written_in_the_transition_that_releases_devices(store):
    store.transition("job-1", JobState.QUEUED, JobState.PLACING, "placed")
    store.transition("job-1", JobState.PLACING, JobState.RUNNING, "running")
    rows = [interval("startup", 1000, 1036), interval("productive", 1036, 1360)]
    with pytest.raises(ZeroDivisionError):  # a crash in the middle of the transaction
        store.transition(
            "job-1",
            JobState.RUNNING,
            JobState.SUCCEEDED,
            "done",
            extra=lambda conn, now: (store.insert_intervals(conn, "research", rows), 1 / 0),
        )
    assert store.intervals("job-1") == [] and store.get_job("job-1")["state"] == "running"  # all or nothing
    store.transition(
        "job-1",
        JobState.RUNNING,
        JobState.SUCCEEDED,
        "done",
        extra=lambda conn, now: store.insert_intervals(conn, "research", rows),
    )
    assert store.intervals("job-1") == rows


def test_cost_report_and_prometheus_agree(store):
    store.transition("job-1", JobState.QUEUED, JobState.PLACING, "placed")
    # "queued" is how rows written before start-up had its own category name it: still read as start-up
    rows = [interval("queued", 0, 360), interval("productive", 360, 3600), interval("lost", 3600, 3960, price=0.5)]
    store.transition(
        "job-1",
        JobState.PLACING,
        JobState.FAILED,
        "x",
        extra=lambda conn, now: store.insert_intervals(conn, "research", rows),
    )
    store.add_metrics("job-1", 0, [{"step": 8, "tokens": 1e6}])  # the runner's progress write
    report = cost_report(store, "job-1")
    assert report["gpu_hours"]["total"] == pytest.approx(2 * 3960 / 3600)
    assert report["gpu_hours"]["productive"] == pytest.approx(2 * 3240 / 3600)
    assert report["cost_usd"] == pytest.approx(2 * 3600 / 3600 * 2.0 + 2 * 360 / 3600 * 0.5)
    assert report["goodput"] == pytest.approx(3240 / 3960)
    assert report["gpu_hours"]["startup"] == pytest.approx(2 * 360 / 3600) and "queued" not in report["gpu_hours"]
    assert report["gpu_hours_per_trillion_tokens"] == pytest.approx(report["gpu_hours"]["total"] / 1e-6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = serve(store, "127.0.0.1", port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    scraped = float(re.search(r'orch_gpu_hours\{category="productive",job="job-1",team="research"\} (\S+)', text)[1])
    assert scraped == pytest.approx(report["gpu_hours"]["productive"])
    assert "orch_reference_gpu_hours 2.788e+06" in text
