"""A runner prestarted for the next attempt (``launcher.prestart_runner``) stands by until it is told to
run. If the controller placed the attempt but never told it (it restarted between the two), the runner
still says ``standby``, and the next pass tells it again: the job does not wait in ``placing`` forever.

The controller is the real ``ControllerCore`` on a real SQLite store and the simulator's cluster; the
launcher is the recording one, whose first ``start`` is lost as a controller crash would lose it."""

from __future__ import annotations

from orchestrator.clock import ManualClock
from orchestrator.control.controller import ControllerCore
from orchestrator.control.rows import job_row
from orchestrator.lifecycle import JobState
from orchestrator.plan.planner import make_plan
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec
from orchestrator.state.records import RunnerStatus
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.recording_launcher import RecordingLauncher


class StandbyLauncher(RecordingLauncher):
    """Every attempt's runner was prestarted; the first ``start`` never reaches it."""

    def __init__(self):
        super().__init__()
        self.told: set[tuple[str, int]] = set()

    def start(self, job, attempt):
        super().start(job, attempt)
        if len(self.started) > 1:
            self.told.add((job.id, attempt))

    def status(self, job):
        running = (job.id, job.attempt) in self.told
        return RunnerStatus("running" if running else "standby", job.attempt)


def test_a_placed_attempt_whose_runner_still_stands_by_is_told_to_run_again(tmp_path):
    spec = load_spec(V3_SPEC, "local")
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    launcher = StandbyLauncher()
    core = ControllerCore(store, SimulatedCluster(spec, 1000.0), launcher, clock)
    job_id = store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC)}))
    core.reconcile()  # placed; the start is lost
    assert store.job_state(job_id) == JobState.PLACING and launcher.started == [(job_id, 1)]
    clock.advance(1)
    core.reconcile()  # its runner stands by: told again
    assert launcher.started == [(job_id, 1), (job_id, 1)]
    clock.advance(1)
    core.reconcile()
    assert store.job_state(job_id) == JobState.RUNNING
    assert launcher.started == [(job_id, 1), (job_id, 1)]  # a running runner is not told again
