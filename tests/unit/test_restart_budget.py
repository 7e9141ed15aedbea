"""The restart budget (``fault_tolerance.restart_budget``): a rate over a sliding window, with the
job's own crashes on a separate, smaller allowance, and ``max_restarts`` as the old lifetime count.

The controller is the real ``ControllerCore`` on a real SQLite state store, a manual clock and the
simulator's cluster; attempts end with the outcomes a runner records (a lost node, a training
error), so these break if the controller stops counting restarts per window or per kind.
"""

from __future__ import annotations

import pytest

from orchestrator.clock import ManualClock
from orchestrator.control.controller import ControllerCore
from orchestrator.control.restart_budget import CRASH, INFRASTRUCTURE, refuse_restart
from orchestrator.control.rows import job_row
from orchestrator.errors import SpecError
from orchestrator.lifecycle import FailureReason, JobState, OutcomeStatus
from orchestrator.plan.planner import make_plan
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec
from orchestrator.spec.schema import FaultToleranceSpec
from orchestrator.state.records import RunnerOutcome
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.clocks import TickingClock
from tests.helpers.recording_launcher import RecordingLauncher

HOUR = 3600.0
BUDGET = "fault_tolerance.restart_budget={restarts: 10, window_hours: 24, crash_restarts: 2}"


def plane(tmp_path, *overrides: str):
    # the local profile (a small gang on this machine) caps the life at 3 restarts: lifted here
    spec = load_spec(V3_SPEC, "local", ["fault_tolerance.max_restarts=null", *overrides])
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    core = ControllerCore(store, SimulatedCluster(spec, 1000.0), RecordingLauncher(), clock)
    job_id = store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC)}))
    core.reconcile()  # placed
    clock.advance(1)
    core.reconcile()  # running
    return core, store, clock, job_id


def end_attempt(core, store, clock, job_id, reason: FailureReason, after_s: float) -> dict:
    """Run the current attempt for ``after_s``, end it with ``reason``, and let the controller restart it."""
    clock.advance(after_s)
    error = "ValueError: loss is nan" if reason == FailureReason.TRAINING_ERROR else "ray.exceptions.NodeDiedError"
    store.record_outcome(
        job_id,
        RunnerOutcome(
            store.job(job_id).attempt,
            OutcomeStatus.FAILED,
            error=error,
            failure_reason=reason,
            infrastructure=reason != FailureReason.TRAINING_ERROR,
        ),
    )
    core.reconcile()  # failed, or recovering (and placed again in the same pass)
    for _ in range(2):
        if store.get_job(job_id)["state"] in (JobState.FAILED.value, JobState.RUNNING.value):
            break
        clock.advance(1)
        core.reconcile()  # placed, then running again
    return store.get_job(job_id)


def test_a_crash_loop_fails_after_its_own_small_allowance(tmp_path):
    core, store, clock, job_id = plane(tmp_path, BUDGET)
    for _ in range(2):
        job = end_attempt(core, store, clock, job_id, FailureReason.TRAINING_ERROR, 60)
        assert job["state"] == JobState.RUNNING.value
    job = end_attempt(core, store, clock, job_id, FailureReason.TRAINING_ERROR, 60)
    assert job["state"] == JobState.FAILED.value and job["failure_reason"] == FailureReason.TRAINING_ERROR.value
    assert job["restarts"] == 2 and "crash loop" in job["message"] and "loss is nan" in job["message"]
    kinds = [(e["data"] or {}).get("restart") for e in store.events(job_id) if e["kind"] == "job.recovering"]
    assert kinds == [CRASH, CRASH]


def test_node_losses_do_not_use_the_crash_allowance(tmp_path):
    core, store, clock, job_id = plane(tmp_path, BUDGET)
    for reason in [FailureReason.TRAINING_ERROR] * 2 + [FailureReason.NODE_LOST] * 5:
        assert end_attempt(core, store, clock, job_id, reason, 600)["state"] == JobState.RUNNING.value
    job = end_attempt(core, store, clock, job_id, FailureReason.TRAINING_ERROR, 600)
    assert job["state"] == JobState.FAILED.value and job["restarts"] == 7


def test_a_hundred_infrastructure_restarts_spread_over_weeks_do_not_fail(tmp_path):
    core, store, clock, job_id = plane(tmp_path, BUDGET)
    for _ in range(120):  # one every 5 h: 4.8 a day, under 10 a day, for 25 days
        job = end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 5 * HOUR)
        assert job["state"] == JobState.RUNNING.value, job["message"]
    assert job["restarts"] == 120


def test_a_burst_inside_the_window_fails_the_job(tmp_path):
    core, store, clock, job_id = plane(tmp_path, BUDGET)
    for _ in range(10):  # one every 2 h: ten inside 24 h
        assert end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 2 * HOUR)["state"] == "running"
    job = end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 2 * HOUR)
    assert job["state"] == JobState.FAILED.value and job["failure_reason"] == FailureReason.MAX_RESTARTS.value
    assert job["restarts"] == 10 and "10 infrastructure restarts in the last 24 h" in job["message"]


def test_the_window_slides(tmp_path):
    core, store, clock, job_id = plane(tmp_path, BUDGET)
    for _ in range(10):
        assert end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 2 * HOUR)["state"] == "running"
    # the ten came at about 2, 4, ... 20 h; at 27 h the first is outside the window: one more is allowed,
    # then the next is not
    assert end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 7 * HOUR)["state"] == "running"
    job = end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 60)
    assert job["state"] == JobState.FAILED.value and job["restarts"] == 11


def test_max_restarts_caps_the_life_on_top_of_the_window(tmp_path):
    core, store, clock, job_id = plane(tmp_path, BUDGET, "fault_tolerance.max_restarts=3")
    for _ in range(3):
        assert end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 10 * HOUR)["state"] == "running"
    job = end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 10 * HOUR)
    assert job["state"] == JobState.FAILED.value and job["failure_reason"] == FailureReason.MAX_RESTARTS.value
    assert "3 restarts used of max_restarts 3" in job["message"]


def test_without_a_budget_the_old_lifetime_count_holds_and_a_crash_fails_at_once():
    legacy = FaultToleranceSpec()
    assert legacy.lifetime_restarts == 3
    assert refuse_restart(legacy, INFRASTRUCTURE, [], 2) is None
    assert refuse_restart(legacy, INFRASTRUCTURE, [], 3).reason == FailureReason.MAX_RESTARTS
    assert refuse_restart(legacy, CRASH, [], 0).reason == FailureReason.TRAINING_ERROR
    budget = FaultToleranceSpec.model_validate({"restart_budget": {"restarts": 2, "window_hours": 1}})
    assert budget.lifetime_restarts is None
    assert refuse_restart(budget, INFRASTRUCTURE, [CRASH, CRASH, INFRASTRUCTURE], 10_000) is None
    assert refuse_restart(budget, INFRASTRUCTURE, [INFRASTRUCTURE] * 2, 2).reason == FailureReason.MAX_RESTARTS
    assert refuse_restart(budget, CRASH, [], 0).reason == FailureReason.TRAINING_ERROR  # crash_restarts 0


def test_the_v3_job_declares_a_windowed_budget_and_bad_budgets_are_refused(tmp_path):
    ft = load_spec(V3_SPEC, None, []).fault_tolerance
    assert ft.restart_budget is not None and ft.lifetime_restarts is None
    assert ft.restart_budget.crash_restarts < ft.restart_budget.restarts
    with pytest.raises(SpecError, match="window_hours"):
        load_spec(V3_SPEC, None, ["fault_tolerance.restart_budget={restarts: 5, window_hours: 0}"])
    with pytest.raises(SpecError, match="restart_budget"):
        load_spec(V3_SPEC, None, ["fault_tolerance.restart_budget={restarts: 5, window_hours: 2, typo: 1}"])


def test_the_controller_preempts_the_equal_priority_job_with_the_freshest_checkpoint(tmp_path):
    """Two priority-0 jobs hold the two nodes; the one that committed a checkpoint a minute ago is
    asked to stop for the priority-9 job, not the one whose newest checkpoint is an hour old."""
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    one_node = ["resources.nodes=1", "parallelism.data=1", "parallelism.expert=1"]
    spec = load_spec(V3_SPEC, "local", one_node)
    core = ControllerCore(store, SimulatedCluster(spec, 1000.0), RecordingLauncher(), clock)

    def submit(*overrides: str) -> str:
        job_spec = load_spec(V3_SPEC, "local", [*one_node, *overrides])
        return store.insert_job(job_row(store.new_job_id(job_spec.name), make_plan(job_spec), {"file": "v3"}))

    fresh = submit()
    clock.advance(1)
    stale = submit()  # the newer job: the old tie-break (newest first) would preempt it
    core.reconcile()
    clock.advance(1)
    core.reconcile()
    assert {store.get_job(j)["state"] for j in (stale, fresh)} == {JobState.RUNNING.value}
    store.record_checkpoint(stale, 10)
    clock.advance(HOUR)
    store.record_checkpoint(fresh, 300)
    clock.advance(60)
    urgent = submit("priority=9")
    core.reconcile()
    assert store.get_job(fresh)["preempt_requested"] and not store.get_job(stale)["preempt_requested"]
    assert store.get_job(urgent)["state"] == JobState.QUEUED.value


def test_the_checkpoint_copies_of_a_job_are_freed_when_it_ends_and_kept_while_it_restarts(tmp_path):
    """A job's rank 0 frees its copies in peer memory only when training finishes; a job that fails
    leaves them in host memory on every holder, so the controller asks the launcher to free them at the
    job's end, once, and never while it restarts (its next attempt restores from them)."""
    core, store, clock, job_id = plane(tmp_path, BUDGET)
    launcher = core.launcher
    assert end_attempt(core, store, clock, job_id, FailureReason.TRAINING_ERROR, 60)["state"] == "running"
    assert launcher.forgotten == []
    for _ in range(2):
        end_attempt(core, store, clock, job_id, FailureReason.TRAINING_ERROR, 60)
    assert store.get_job(job_id)["state"] == JobState.FAILED.value
    clock.advance(1)
    core.reconcile()
    assert launcher.forgotten == [job_id]


def test_a_gang_that_lost_its_workers_waits_until_the_node_view_has_caught_up(tmp_path):
    """Seen in CI: a raylet killed mid-training, the runner reported the lost workers 1.1 s later, and
    the gang was placed again on the dead node, still listed alive by Ray (its health check declares it
    dead after ~3 s): a second failure and restart. With a provider whose view lags deaths
    (``RayNodeProvider.death_lag_s``) the job waits until a node of its lost gang is seen down, or the
    lag has passed, then goes elsewhere."""
    for node_goes_down in (True, False):
        core, store, clock, job_id = plane(tmp_path / str(node_goes_down), BUDGET)
        core.provider.death_lag_s = 5.0
        gang = store.get_job(job_id)["assignment"]
        clock.advance(60)
        store.record_outcome(
            job_id,
            RunnerOutcome(1, OutcomeStatus.FAILED, error="ray.exceptions.ActorDiedError", infrastructure=True),
        )
        core.reconcile()
        job = store.get_job(job_id)
        assert job["state"] == JobState.RECOVERING.value and job["assignment"] is None  # not placed at once
        clock.advance(1)
        core.reconcile()
        assert store.get_job(job_id)["assignment"] is None
        if node_goes_down:
            core.provider.fail(gang[-1], clock.now())  # the view catches up: placed in the next pass
        else:
            clock.advance(4)  # nothing seen down: placed once the lag has passed
        core.reconcile()
        placed = store.get_job(job_id)["assignment"]
        assert placed and (gang[-1] not in placed if node_goes_down else True)


def test_the_controllers_ledger_rows_end_when_the_move_that_writes_them_is_recorded(tmp_path):
    """A restart and the end each write the attempt's rows in the transition's transaction; on a clock
    that moves between any two readings the rows still end at the recorded transition, to the float."""
    spec = load_spec(V3_SPEC, "local", ["fault_tolerance.max_restarts=null", BUDGET])
    clock = TickingClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    core = ControllerCore(store, SimulatedCluster(spec, 1000.0), RecordingLauncher(), clock)
    job_id = store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC)}))
    core.reconcile()
    core.reconcile()
    end_attempt(core, store, clock, job_id, FailureReason.NODE_LOST, 60)
    for _ in range(3):  # the crash allowance (2) is spent by the third
        end_attempt(core, store, clock, job_id, FailureReason.TRAINING_ERROR, 60)
    assert store.get_job(job_id)["state"] == JobState.FAILED.value
    releasing = [t["at"] for t in store.transitions(job_id) if t["to_state"] in ("recovering", "failed")]
    ends = sorted({i.end for i in store.intervals(job_id)})
    assert len(releasing) == 4 and ends == releasing
