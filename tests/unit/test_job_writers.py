"""One named writer for each job field, typed records across the store boundary, and job ownership.

- ``request_preempt`` is the one writer of a preemption request (scheduler, drain, notice), keeps the
  earliest notice deadline and records who asked and why;
- a notice's deadline is a column on the node, not a ``notice:`` prefix of the cordon reason;
- ``JobRecord`` carries the spec parsed once, outcomes and statuses are dataclasses;
- the Ray controller never acts on a row the Kubernetes control plane owns, and ``k8s/submit.py``
  never follows a row it does not own. The controller is the real ``ControllerCore`` on the
  simulator's real node provider and launcher (no fakes)."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from orchestrator.clock import ManualClock
from orchestrator.control.notices import handle_notice, taken_with_notice
from orchestrator.control.rows import job_row
from orchestrator.k8s.submit import NotOurs, follow, record
from orchestrator.lifecycle import FailureReason, JobState, OutcomeStatus, Owner
from orchestrator.plan.planner import make_plan
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import Simulation
from orchestrator.spec.loader import load_spec
from orchestrator.state.records import RunnerOutcome
from orchestrator.state.store import MIGRATIONS, EventRecord, StateStore
from tests.conftest import MINIMAL_SPEC, V3_SPEC


@pytest.fixture
def store(tmp_path):
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=ManualClock(1000.0))


def submit(store: StateStore, job_id: str, owner: Owner = Owner.RAY, spec_file=MINIMAL_SPEC) -> str:
    plan = make_plan(load_spec(spec_file))
    return store.insert_job(
        job_row(job_id, plan, {"file": str(spec_file)}),
        [EventRecord("job.submitted", f"{job_id}: submitted")],
        owner=owner,
    )


def test_preemption_requests_have_one_writer_that_keeps_the_earliest_deadline(store):
    submit(store, "job-1")
    store.request_preempt("job-1", "preempted for job-2", "orch", data={"for": "job-2"})
    assert store.job("job-1").preempt_requested and store.job("job-1").preempt_deadline is None
    store.request_preempt("job-1", "n1 goes", "kubernetes", deadline=1120.0)
    store.request_preempt("job-1", "n2 goes", "kubernetes", deadline=1300.0)  # a later notice: the first stands
    assert store.job("job-1").preempt_deadline == 1120.0
    events = [(e["kind"], e["message"], e["actor"], e["data"]) for e in store.events("job-1")][1:]
    assert events == [
        ("job.preempting", "job-1: preempted for job-2", "orch", {"for": "job-2"}),
        ("job.preempting", "job-1: n1 goes", "kubernetes", {"deadline": 1120.0}),
        ("job.preempting", "job-1: n2 goes", "kubernetes", {"deadline": 1300.0}),
    ]
    assert not hasattr(store, "update_job")  # no anonymous writer of job fields is left


def test_a_notice_deadline_is_a_column_and_the_controller_reads_it(store):
    submit(store, "job-1")
    store.transition(
        "job-1", JobState.QUEUED, JobState.PLACING, "placed", updates={"assignment": ["n1", "n2"], "attempt": 1}
    )
    asked = []
    handle_notice(store, "n2", 1120.0, "spot interruption", "test", lambda job, d, deadline: asked.append(deadline))
    assert asked == [1120.0] and store.noticed_nodes() == {"n2": 1120.0}
    job = store.job("job-1")
    assert job.preempt_requested and job.preempt_deadline == 1120.0
    assert taken_with_notice(store, job) == "n2"
    store.set_cordon("n2", True, "notice: typed by hand, no deadline", "operator")  # the text no longer decides
    assert taken_with_notice(store, store.job("job-1")) is None
    store.set_cordon("n1", True, "maintenance window", "operator", notice_deadline=1500.0)
    assert taken_with_notice(store, store.job("job-1")) == "n1"
    store.set_cordon("n1", False, "replaced", "operator")
    assert store.noticed_nodes() == {}


def test_records_are_typed_and_the_spec_is_parsed_once(store, monkeypatch):
    submit(store, "job-1")
    import orchestrator.state.store as store_module

    parsed = []
    real = store_module.validate_mapping
    monkeypatch.setattr(
        store_module, "validate_mapping", lambda data, source: parsed.append(source) or real(data, source)
    )
    first, again = store.job("job-1"), store.jobs([JobState.QUEUED])[0]
    assert parsed == ["job-1"] and first.spec is again.spec  # one parse per store and job
    assert first.state is JobState.QUEUED and first.owner is Owner.RAY
    assert first.spec.fault_tolerance.lifetime_restarts == 3 and first.spec_data["name"] == first.spec.name
    outcome = RunnerOutcome(1, OutcomeStatus.FAILED, 7, "NodeDiedError", infrastructure=True)
    store.record_outcome("job-1", outcome)
    assert store.job("job-1").outcome == outcome and RunnerOutcome.from_row(outcome.as_row()) == outcome
    assert outcome.failure == FailureReason.NODE_LOST  # an older runner's row: only ``infrastructure``
    classed = RunnerOutcome(1, OutcomeStatus.FAILED, 7, "CommitFailed", True, None, FailureReason.CHECKPOINT_COMMIT)
    assert RunnerOutcome.from_row(classed.as_row()).failure == FailureReason.CHECKPOINT_COMMIT
    assert RunnerOutcome(1, OutcomeStatus.STOPPED, 7).failure is None
    assert store.get_job("job-1")["outcome"] == {
        "attempt": 1,
        "status": "failed",
        "step": 7,
        "error": "NodeDiedError",
        "infrastructure": True,
    }
    store.record_checkpoint("job-1", 6)
    store.request_cancel("job-1", "user:ann")
    job = store.job("job-1")
    assert (job.last_checkpoint_step, job.cancel_requested, job.cancel_requested_at) == (6, True, 1000.0)
    assert [e["kind"] for e in store.events("job-1")][-2:] == ["checkpoint.committed", "job.cancel_requested"]


def test_the_ray_controller_leaves_kubernetes_jobs_alone():
    """The real ControllerCore over the simulator's cluster and launcher: it places the Ray-owned job
    and never moves, cancels or annotates the one a RayJob on Kubernetes runs."""
    sim = Simulation(load_spec(str(V3_SPEC)), Scenario(), state_url="sqlite://")
    store = sim.store
    spec_file = V3_SPEC
    record(store, job_row("on-k8s", make_plan(load_spec(str(spec_file))), {"target": "k8s"}), ["RayJob/on-k8s"], "orch")
    submit(store, "on-ray", spec_file=spec_file)
    store.request_cancel("on-k8s", "user:ann")  # a request the Ray controller must not act on either
    sim.controller.reconcile()
    sim.controller.reconcile()
    assert store.job_owner("on-k8s") == Owner.KUBERNETES and store.job_owner("on-ray") == Owner.RAY
    assert store.job_state("on-ray") == JobState.PLACING and "on-ray" in sim.launcher.attempts
    untouched = store.job("on-k8s")
    assert untouched.state == JobState.QUEUED and untouched.message is None and untouched.assignment is None
    assert [t["to_state"] for t in store.transitions("on-k8s")] == ["queued"]
    assert "on-k8s" not in sim.launcher.attempts
    assert [j.id for j in store.jobs(owner=Owner.KUBERNETES)] == ["on-k8s"]


def test_the_kubernetes_follower_refuses_a_ray_job(store):
    submit(store, "on-ray")
    with pytest.raises(NotOurs, match="ray controller"):
        follow(None, store, "on-ray", "orch", "on-ray")  # refused before any API call
    assert store.job_state("on-ray") == JobState.QUEUED


def test_migration_0004_keeps_old_rows_and_their_notice_cordons(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, team, priority, state, spec, source, world_size, nodes, "
                "devices_per_node, total_steps, submitted_at, updated_at, step, tokens, attempt, restarts, "
                "cancel_requested, preempt_requested) VALUES ('old-1', 'old', 't', 0, 'queued', '{}', "
                "'{}', 1, 1, 1, 1, 5.0, 5.0, 0, 0, 0, 0, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO node_states VALUES ('n1', 1, 'notice: spot interruption', 7.0), "
                "('n2', 1, 'drain: maintenance', 8.0)"
            )
        )
    store = StateStore(url)
    assert store.job_owner("old-1") == Owner.RAY
    assert store.noticed_nodes() == {"n1": 7.0}
