"""A job submitted with `--target k8s` is in the ledger like any other (issue 16, item 7).

The RayJob's driver (``k8s/entrypoint.py``) records each attempt's gang with its nodes' prices
(``StateStore.record_gang``); `orch submit`'s follower (``k8s/submit.py``) moves the row through the
RayJob's states and, when it ends, writes the last attempt's intervals in the same transaction. A
driver KubeRay runs again (``backoffLimit``, a new RayCluster) closes the attempt before it as lost.
Here the RayJob's statuses come from a replaying API server, with the values KubeRay defines
(ray-operator/apis/ray/v1/rayjob_types.go, JobDeploymentStatus: "Initializing", "Running", "Complete";
JobStatus "RUNNING", "SUCCEEDED") in the order its RayJob controller sets them
(ray-operator/controllers/ray/rayjob_controller.go: New -> Initializing -> Running -> Complete)."""

from __future__ import annotations

import pytest

from orchestrator.clock import ManualClock
from orchestrator.control.rows import job_row
from orchestrator.k8s.entrypoint import record_attempt
from orchestrator.k8s.submit import follow, follow_namespace, record
from orchestrator.ledger.report import cost_report
from orchestrator.lifecycle import JobState, Owner
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StaleState, StateStore
from tests.conftest import MINIMAL_SPEC
from tests.helpers.clocks import TickingClock
from tests.helpers.k8s_replay import ReplayServer

T0 = 1_800_000_000.0
RAYJOB = r"/apis/ray.io/v1/namespaces/orch/rayjobs/minimal-k8s"
PRICES = [
    "resources.pools=[{name: od, kind: on-demand, nodes: 1, price_per_gpu_hour: 2.0}, "
    "{name: cheap, kind: spot, nodes: 1, price_per_gpu_hour: 0.5}]"
]


def ray_node(name: str, pool: str, kind: str) -> dict:
    """A raylet as ``ray.nodes()`` lists it, with the labels orch's init container writes."""
    return {
        "Alive": True,
        "Labels": {"orch-node": name, "orch-pool": pool, "orch-pool-kind": kind},
        "Resources": {"orch_device": 2.0, "CPU": 4.0},
    }


NODES = [ray_node("w-od", "od", "on-demand"), ray_node("w-spot", "cheap", "spot")]


@pytest.fixture
def store(tmp_path):
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=ManualClock(T0))


def submitted(store) -> str:
    spec = load_spec(str(MINIMAL_SPEC), overrides=PRICES)
    row = job_row("minimal-k8s", make_plan(spec), {"target": "k8s"})
    return record(store, row, ["RayJob/minimal-k8s"], "orch")


def follow_while(store, job_id: str, *statuses: dict) -> JobState:
    """Follow the RayJob through ``statuses`` (the last one stays), one poll each."""
    with ReplayServer() as api:
        for status in statuses[:-1]:
            api.on("GET", RAYJOB, body={"kind": "RayJob", "status": status}, times=1)
        api.on("GET", RAYJOB, body={"kind": "RayJob", "status": statuses[-1]})
        return follow(api.api_client(), store, job_id, "orch", "minimal-k8s", poll_s=0.0, timeout_s=0.0)


def steps(store, job_id: str, attempt: int, first: int, count: int, start: float) -> None:
    """The runner's step metrics: one 10 s step after another from ``start``."""
    rows = [
        {"step": s, "wall_time": start + 10.0 * (s - first + 1), "step_time_s": 10.0, "tokens": 128.0 * s}
        for s in range(first, first + count)
    ]
    store.add_metrics(job_id, attempt, rows)


def test_a_rayjobs_attempts_are_priced_from_its_gang_to_its_end(store):
    job_id = submitted(store)
    clock = store.clock
    assert follow_while(store, job_id, {"jobDeploymentStatus": "Initializing"}) == JobState.PLACING
    clock.advance(60.0)  # the RayCluster's pods start; then the driver records its gang
    assert record_attempt(store, job_id, ["w-od", "w-spot"], NODES) == 1
    job = store.job(job_id)
    assert job.assignment == ["w-od", "w-spot"] and job.attempt == 1
    assert [(h["pool"], h["price_per_device_hour"]) for h in job.holds] == [("od", 2.0), ("cheap", 0.5)]
    assert follow_while(store, job_id, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}) == JobState.RUNNING
    steps(store, job_id, 1, 1, 30, T0 + 90.0)
    store.record_checkpoint(job_id, 25)  # the runner's commit: steps after it are trained again
    clock.advance(540.0)  # at T0 + 600 KubeRay runs the driver again, on a new RayCluster
    running = cost_report(store, job_id)["gpu_hours"]["total"]
    assert running == pytest.approx(4 * 600 / 3600)  # priced on the fly from the placement: 4 devices
    assert record_attempt(store, job_id, ["w-od", "w-spot"], NODES) == 2
    closed = store.intervals(job_id)
    assert {i.category for i in closed} >= {"productive"} and all(i.attempt == 1 for i in closed)
    assert min(i.start for i in closed) == T0 and max(i.end for i in closed) == T0 + 600.0
    steps(store, job_id, 2, 31, 20, T0 + 630.0)
    clock.advance(300.0)
    done = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "message": "done"}
    assert follow_while(store, job_id, done) == JobState.SUCCEEDED
    report = cost_report(store, job_id)
    hours = report["gpu_hours"]
    # the whole span from placement to the end, once: 4 devices x 900 s, nothing twice, nothing missing
    assert hours["total"] == pytest.approx(4 * 900 / 3600, rel=1e-9)
    assert sum(v for k, v in hours.items() if k != "total") == pytest.approx(hours["total"], rel=1e-9)
    assert 0 < hours["productive"] < hours["total"] and hours.get("lost", 0) > 0  # attempt 1's tail was lost
    spans = sorted((i.start, i.end) for i in store.intervals(job_id) if i.node == "w-od")
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:]))  # no second of a node counted twice
    assert report["cost_usd"] == pytest.approx(hours["total"] / 2 * 2.0 + hours["total"] / 2 * 0.5, rel=1e-6)
    assert {i.attempt for i in store.intervals(job_id)} == {1, 2}
    assert [e["kind"] for e in store.events(job_id) if e["kind"] == "job.gang"] == ["job.gang", "job.gang"]


def test_a_second_driver_cannot_record_the_same_attempt_and_a_ray_job_is_refused(store):
    job_id = submitted(store)
    store.record_gang(job_id, 1, ["w-od"], [])
    with pytest.raises(StaleState):
        store.record_gang(job_id, 1, ["w-spot"], [])
    assert store.job(job_id).assignment == ["w-od"]
    spec = load_spec(str(MINIMAL_SPEC))
    ray_row = job_row("on-ray", make_plan(spec), {})
    store.insert_job(ray_row, owner=Owner.RAY)
    with pytest.raises(StaleState, match="not a RayJob's"):
        store.record_gang("on-ray", 1, ["w-od"], [])
    assert store.job("on-ray").assignment is None


def test_the_controller_follows_a_detached_rayjob_into_the_ledger(store):
    """`orch submit --detach` leaves the row to the deployed controller: one ``follow_namespace`` pass
    per loop moves every RayJob of its namespace that has not ended, and closes it into the ledger."""
    job_id = submitted(store)
    other = store.insert_job(
        {**job_row("elsewhere", make_plan(load_spec(str(MINIMAL_SPEC))), {"target": "k8s", "namespace": "lab"})},
        owner=Owner.KUBERNETES,
    )
    store.clock.advance(30.0)
    record_attempt(store, job_id, ["w-od", "w-spot"], NODES)
    statuses = [
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "message": "done"},
    ]
    with ReplayServer() as api:
        for status in statuses:
            api.on("GET", RAYJOB, body={"kind": "RayJob", "status": status}, times=1)
        assert follow_namespace(api.api_client(), store, "orch") == 1
        assert store.job_state(job_id) == JobState.RUNNING
        store.clock.advance(270.0)
        assert follow_namespace(api.api_client(), store, "orch") == 1
        assert follow_namespace(api.api_client(), store, "orch") == 0  # ended: not read again
        paths = [r.path for r in api.sent("GET", RAYJOB)]
    assert len(paths) == 2  # the job of namespace 'lab' is not this controller's
    assert store.job_state(job_id) == JobState.SUCCEEDED and store.job_state(other) == JobState.QUEUED
    # priced from the gang record (nobody saw it initialise) to the end: 4 devices x 270 s, in the ledger
    assert sum(i.devices * (i.end - i.start) for i in store.intervals(job_id)) == pytest.approx(4 * 270.0)


def test_an_unreachable_api_server_is_logged_and_the_next_pass_goes_on(store):
    """A connection error (urllib3, not an ApiException) must not end the controller's loop."""
    from kubernetes import client

    job_id = submitted(store)
    config = client.Configuration()
    config.host, config.retries = "http://127.0.0.1:9", 0  # nothing listens on the discard port
    lines = []
    assert follow_namespace(client.ApiClient(config), store, "orch", log=lines.append) == 1
    assert len(lines) == 1 and job_id in lines[0] and "reading RayJob orch/minimal-k8s" in lines[0]
    assert store.job_state(job_id) == JobState.QUEUED


def test_an_attempts_intervals_end_when_the_move_that_writes_them_is_recorded(tmp_path):
    """The ledger agrees with the job's own history to the float: the first attempt's rows end at the
    second gang's record, and the last attempt's at the recorded end (CI once saw them 40 ms apart)."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=TickingClock(T0))
    job_id = submitted(store)
    follow_while(store, job_id, {"jobDeploymentStatus": "Initializing"})
    record_attempt(store, job_id, ["w-od", "w-spot"], NODES)
    first_gang = store.last_event_at(job_id, "job.gang")
    record_attempt(store, job_id, ["w-od", "w-spot"], NODES)  # KubeRay ran the driver again
    second_gang = store.last_event_at(job_id, "job.gang")
    follow_while(store, job_id, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"})
    ended = store.transitions(job_id)[-1]["at"]
    first, last = sorted({i.attempt for i in store.intervals(job_id)})
    assert max(i.end for i in store.intervals(job_id) if i.attempt == first) == second_gang
    assert min(i.start for i in store.intervals(job_id) if i.attempt == last) == second_gang
    assert max(i.end for i in store.intervals(job_id) if i.attempt == last) == ended
    assert first_gang < second_gang < ended
