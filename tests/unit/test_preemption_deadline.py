"""A job preempted for a higher-priority one is asked to save first, by a deadline, and told to stop
when the deadline passes: the higher-priority job never waits on a slow or hung save for longer
than ``PREEMPT_GRACE_S``. (Which job is preempted among equal priorities, the freshest checkpoint
first, is tested in test_scheduler.py and test_restart_budget.py; whether the gang starts the save
at all, in test_checkpoint_session.py.)"""

from __future__ import annotations

from orchestrator.clock import ManualClock
from orchestrator.control.controller import PREEMPT_GRACE_S, ControllerCore
from orchestrator.control.rows import job_row
from orchestrator.lifecycle import Directive, JobState
from orchestrator.plan.planner import make_plan
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.recording_launcher import RecordingLauncher

ONE_NODE = ["resources.nodes=1", "parallelism.data=1", "parallelism.expert=1"]


class AskingLauncher(RecordingLauncher):
    """Records every directive the controller sends to a job's runner."""

    def __init__(self):
        super().__init__()
        self.asked: list[tuple[str, Directive, float | None]] = []

    def request(self, job, directive, deadline=None):
        self.asked.append((job.id, directive, deadline))


def test_a_preempted_job_saves_by_the_deadline_or_is_told_to_stop(tmp_path):
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    launcher = AskingLauncher()
    core = ControllerCore(store, SimulatedCluster(load_spec(V3_SPEC, "local", ONE_NODE), 1000.0), launcher, clock)

    def submit(*overrides: str) -> str:
        spec = load_spec(V3_SPEC, "local", [*ONE_NODE, *overrides])
        return store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": "v3"}))

    low, other = submit(), submit()  # the two nodes a job may use (the third is a spare)
    core.reconcile()
    clock.advance(1)
    core.reconcile()
    assert {store.get_job(j)["state"] for j in (low, other)} == {JobState.RUNNING.value}
    store.record_checkpoint(low, 10)  # low's newest checkpoint is the freshest: it loses least, it goes
    urgent = submit("priority=9")
    clock.advance(1)
    core.reconcile()  # the scheduler picks the victim and asks it, with a deadline
    deadline = store.get_job(low)["preempt_deadline"]
    assert deadline == clock.now() + PREEMPT_GRACE_S
    core.reconcile()  # the victim's runner is asked to save by that deadline
    assert (low, Directive.CHECKPOINT_STOP, deadline) in launcher.asked
    assert store.get_job(low)["state"] == JobState.CHECKPOINTING.value
    asked = len(launcher.asked)
    clock.set(deadline - 1)
    core.reconcile()
    assert (low, Directive.STOP, None) not in launcher.asked[asked:]  # still in time: it may be saving
    clock.set(deadline + 1)
    core.reconcile()
    assert (low, Directive.STOP, None) in launcher.asked[asked:]  # past it: stop, give the nodes back
    assert store.get_job(urgent)["state"] == JobState.QUEUED.value  # waiting for the victim's nodes
    assert not store.get_job(other)["preempt_requested"]
