"""What the interval policy is told about a job at each attempt's start: its infrastructure
interruptions (not its crashes) over the seconds its gang held nodes, from the ledger rows and the
restart events the controller wrote (``ledger/exposure.py``)."""

from __future__ import annotations

import time

import pytest

from orchestrator.checkpoint.policy import IntervalPolicy
from orchestrator.clock import ManualClock
from orchestrator.ledger.exposure import gang_exposure
from orchestrator.ledger.intervals import Interval
from orchestrator.lifecycle import JobState
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import EventRecord, StateStore
from tests.conftest import MINIMAL_SPEC
from tests.helpers.job_rows import minimal_job_row


def _row(attempt: int, node: str, category: str, start: float, end: float) -> Interval:
    return Interval("job-1", attempt, node, "spot", "spot", 2, "cpu", "pre_training", category, start, end, 1.0)


def test_exposure_counts_infrastructure_restarts_over_the_gangs_held_seconds(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=ManualClock(1000.0))
    spec = load_spec(
        MINIMAL_SPEC,
        overrides=[
            "resources.pools=[{name: spot, kind: spot, nodes: 2, interruptions_per_node_day: 0.5}]",
            "checkpoint.interval=auto",
        ],
    )
    store.insert_job(minimal_job_row(spec))
    assert gang_exposure(store, "job-1", 4).as_tuple() == (0, 0.0)  # the first attempt starts from the spec

    def attempt(n: int, start: float, end: float, kind: str, to: JobState) -> None:
        rows = [_row(n, node, "productive", start, end) for node in ("n1", "n2")]
        store.transition("job-1", JobState.QUEUED if n == 1 else JobState.RECOVERING, JobState.PLACING, "placed")
        store.transition("job-1", JobState.PLACING, JobState.RUNNING, "running")
        store.transition(
            "job-1",
            JobState.RUNNING,
            to,
            "lost",
            events=[EventRecord("job.recovering", "restart", {"restart": kind})],
            extra=lambda conn, now: store.insert_intervals(conn, "research", rows),
        )

    attempt(1, 1000.0, 1360.0, "infrastructure", JobState.RECOVERING)  # a node lost after 360 s
    attempt(2, 1400.0, 2000.0, "crash", JobState.RECOVERING)  # the job's own error after 600 s
    seen = gang_exposure(store, "job-1", 4)
    # 2 nodes x 2 devices x (360 + 600) s over a gang of 4 devices; the crash is not an interruption
    assert seen.as_tuple() == (1, pytest.approx(960.0))
    policy = IntervalPolicy(spec, ManualClock(0.0))
    before = policy.mtbf_s()
    assert before == pytest.approx(86400.0 / (2 * 0.5))  # the spec's 1 per gang-day
    policy.observe_interruptions(*seen.as_tuple())
    # Gamma-Poisson with the spec's rate worth a day: (86400 + 960) s / (1 prior event + 1 seen)
    assert policy.mtbf_s() == pytest.approx((86400.0 + 960.0) / 2)


def test_a_rayjob_without_a_state_store_takes_its_interruptions_from_the_checkpoint_attempts(tmp_path):
    """On Kubernetes the RayJob entrypoint (k8s/entrypoint.py) without a state store; KubeRay retries it
    only after a failure, so every attempt registered in the checkpoint store before this one was
    interrupted, over the wall time since the first one started."""
    from orchestrator.checkpoint.locate import open_job_checkpoints

    spec = load_spec(
        MINIMAL_SPEC,
        overrides=[
            "resources.pools=[{name: spot, kind: spot, nodes: 2, interruptions_per_node_day: 0.5}]",
            "checkpoint.interval=auto",
            f"checkpoint.uri=file://{tmp_path / 'ckpt'}",
        ],
    )
    store = open_job_checkpoints(spec.checkpoint, "job-1")
    assert store.exposure_since_first_attempt() is None  # the first attempt starts from the spec
    first = time.time()
    store.register_attempt()
    store.register_attempt()
    seen = store.exposure_since_first_attempt(now=first + 3600.0)
    assert seen[0] == 2 and seen[1] == pytest.approx(3600.0, abs=5.0)
    policy = IntervalPolicy(spec, ManualClock(0.0))
    policy.observe_interruptions(*seen)
    assert policy.mtbf_s() == pytest.approx((86400.0 + seen[1]) / 3)  # 1 prior event + 2 seen


def test_the_simulator_tells_each_attempt_what_a_live_runner_would():
    """The simulated launcher gives a new attempt's interval policy the figures a live runner reads from
    the ledger (``gang_exposure``): restarts over the seconds the gang held nodes, not over wall time.
    Here the job waits 11 s for a node between its second and third attempts, so the two differ."""
    from orchestrator.plan.scenario import Scenario
    from orchestrator.simulate.engine import Simulation
    from tests.conftest import V3_SPEC

    # 2M tokens: the job still trains when the nodes go (the local job's own would end at 38 s)
    spec = load_spec(str(V3_SPEC), "local", ["checkpoint.interval=auto", "phases.0.tokens=2000000"])
    # the spot node goes (after its notice), then the spare the job moved to: no node is left until the
    # spare ordered at the first restart joins (40 s after it); the run is stopped in the third attempt
    sim = Simulation(
        spec,
        Scenario(
            trace=((50.0, "local-spot-0000"), (51.0, "local-spare-0000")),
            provision_delay_s=40.0,
            max_days=100.0 / 86400,
        ),
    )
    sim.run()
    (run,) = sim.launcher.running()
    job = sim.store.job(run.job_id)
    assert run.attempt == 3
    seen = gang_exposure(sim.store, run.job_id, job.world_size)
    assert run.observed == (seen.interruptions, pytest.approx(seen.held_s)) and seen.interruptions == 2
    # held: attempt 1 from 0 s to its notice's save at 22 s, attempt 2 until its node went at 51 s; the
    # 11 s without a node, until attempt 3 was placed at 62 s, is not exposure
    assert seen.held_s == pytest.approx(51.0)
