"""Failure classes: checkpoint storage outages, timeouts and commit failures restart the job from
the last good checkpoint after a backoff (counted against max_restarts, the reason on the job, the
attempt's time in the ledger's recovery hours); a refused checkpoint and training errors fail it.

The errors are real (a refused S3 connection through boto3, a commit that times out, a pickle the
codec refuses, a training exception), classed from their tracebacks as the runner sees them; the
controller is the real ``ControllerCore`` on a real SQLite state store, a manual clock and the
simulator's cluster, with a launcher that only records what the controller asks of it.
"""

from __future__ import annotations

import pickle
import traceback

import pytest

from orchestrator.checkpoint.codec import decode
from orchestrator.checkpoint.objects import FileObjectStore, S3ObjectStore
from orchestrator.checkpoint.store import CheckpointStore
from orchestrator.clock import ManualClock
from orchestrator.control.controller import ControllerCore
from orchestrator.control.failures import BACKOFF_BASE_S, backoff_s, classify
from orchestrator.control.rows import job_row
from orchestrator.ledger.report import cost_report
from orchestrator.lifecycle import FailureReason, JobState, OutcomeStatus
from orchestrator.plan.planner import make_plan
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec
from orchestrator.state.records import RunnerOutcome
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.recording_launcher import RecordingLauncher
from tests.s3server import free_port


def traceback_of(fn) -> str:
    try:
        fn()
    except Exception as exc:  # the text the runner records
        return "".join(traceback.format_exception(exc))
    raise AssertionError("did not raise")


def test_real_errors_are_classed(tmp_path):
    down = S3ObjectStore("bucket", "job", f"http://127.0.0.1:{free_port()}", max_attempts=1)
    assert classify(traceback_of(lambda: down.put("x", b"1"))) == FailureReason.CHECKPOINT_STORAGE
    store = CheckpointStore(FileObjectStore(tmp_path), "job")
    commit = traceback_of(lambda: store.commit(1, 2, {}, 0.0, {}, timeout_s=0.1, attempt=1))
    assert classify(commit) == FailureReason.CHECKPOINT_COMMIT
    assert classify(traceback_of(lambda: decode(pickle.dumps({"a": 1})))) == FailureReason.CHECKPOINT_REFUSED
    assert classify(traceback_of(lambda: 1 / 0)) == FailureReason.TRAINING_ERROR
    assert classify("ray.exceptions.ActorDiedError: the actor died") == FailureReason.NODE_LOST
    # Ray Train's worker-group error as a CI run recorded it for a killed raylet: no exception class named
    seen = "\tthe actor's node was terminated unexpectedly: health check failed due to missing too many heartbeats"
    assert classify(seen) == FailureReason.NODE_LOST


@pytest.fixture
def plane(tmp_path):
    spec = load_spec(V3_SPEC, "local", ["fault_tolerance.max_restarts=2", "fault_tolerance.restart_budget=null"])
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    launcher = RecordingLauncher()
    core = ControllerCore(store, SimulatedCluster(spec, 1000.0), launcher, clock)
    plan = make_plan(spec)
    job_id = store.insert_job(job_row(store.new_job_id(spec.name), plan, {"file": str(V3_SPEC)}))
    return core, store, clock, launcher, job_id


def fail_attempt(store, job_id, error: str, reason: FailureReason) -> None:
    store.record_outcome(
        job_id,
        RunnerOutcome(
            store.job(job_id).attempt,
            OutcomeStatus.FAILED,
            error=error,
            failure_reason=reason,
            infrastructure=reason != "training_error",
        ),
    )


def test_a_storage_outage_restarts_after_a_backoff_and_counts_as_recovery(plane):
    core, store, clock, launcher, job_id = plane
    core.reconcile()
    assert launcher.started == [(job_id, 1)]
    clock.advance(1)
    core.reconcile()  # running
    clock.advance(600)
    fail_attempt(
        store,
        job_id,
        "orchestrator.checkpoint.objects.StorageError: s3://b/j: upload: SlowDown",
        FailureReason.CHECKPOINT_STORAGE,
    )
    core.reconcile()
    job = store.get_job(job_id)
    assert job["state"] == JobState.RECOVERING.value and job["restarts"] == 1
    assert job["failure_reason"] == "checkpoint_storage" and "SlowDown" in job["message"]
    clock.advance(BACKOFF_BASE_S - 1)
    core.reconcile()
    assert launcher.started == [(job_id, 1)]  # still backing off
    clock.advance(2)
    core.reconcile()
    assert launcher.started == [(job_id, 1), (job_id, 2)]
    clock.advance(1)
    core.reconcile()
    assert store.get_job(job_id)["failure_reason"] is None  # running again
    report = cost_report(store, job_id)
    assert report["gpu_hours"]["recovery"] > 0  # the failed attempt's time after its last step


def test_commit_failures_back_off_longer_each_time_until_max_restarts(plane):
    core, store, clock, launcher, job_id = plane
    assert backoff_s(2) == 2 * backoff_s(1)
    for restart in (1, 2):
        core.reconcile()
        clock.advance(1)
        core.reconcile()
        fail_attempt(
            store,
            job_id,
            "orchestrator.checkpoint.store.CommitFailed: step 40: ranks [3] ...",
            FailureReason.CHECKPOINT_COMMIT,
        )
        core.reconcile()
        assert store.get_job(job_id)["restarts"] == restart
        clock.advance(backoff_s(restart) + 1)
    core.reconcile()
    clock.advance(1)
    core.reconcile()
    fail_attempt(store, job_id, "CommitFailed", FailureReason.CHECKPOINT_COMMIT)
    core.reconcile()
    job = store.get_job(job_id)
    assert job["state"] == JobState.FAILED.value and job["failure_reason"] == "max_restarts_exceeded"


@pytest.mark.parametrize("reason", [FailureReason.TRAINING_ERROR, FailureReason.CHECKPOINT_REFUSED])
def test_deterministic_errors_fail_the_job(plane, reason):
    core, store, clock, launcher, job_id = plane
    core.reconcile()
    clock.advance(1)
    core.reconcile()
    fail_attempt(store, job_id, "ValueError: boom", reason)
    core.reconcile()
    job = store.get_job(job_id)
    assert job["state"] == JobState.FAILED.value and job["failure_reason"] == reason.value
    assert job["restarts"] == 0
