"""The hot-spare policy: how many nodes to provision so each job keeps its idle spares, and which
surplus spares to retire."""

import pytest

from orchestrator.clock import ManualClock
from orchestrator.cluster.placement import NodeView
from orchestrator.control.controller import ControllerCore
from orchestrator.control.rows import job_row
from orchestrator.control.spares import spare_shortfall, spare_surplus
from orchestrator.lifecycle import JobState, Owner
from orchestrator.plan.planner import make_plan
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec, validate_mapping
from orchestrator.state.records import JobRecord
from orchestrator.state.store import StateStore
from tests.conftest import MINIMAL_SPEC, V3_SPEC
from tests.helpers.recording_launcher import RecordingLauncher

POOLS = [
    {"name": "od", "kind": "on-demand", "nodes": 1},
    {"name": "spot", "kind": "spot", "nodes": 1},
    {"name": "spare", "kind": "spare", "nodes": 1},
]


def job(state="running", assignment=("od-0", "spot-0"), spares=1):
    data = load_spec(MINIMAL_SPEC).model_dump(mode="json")
    data["resources"]["pools"] = POOLS
    data["fault_tolerance"] = {**data.get("fault_tolerance", {}), "spare_nodes": spares}
    return JobRecord(
        id="j",
        name="j",
        team="t",
        priority=0,
        state=JobState(state),
        owner=Owner.RAY,
        spec=validate_mapping(data, "j"),
        spec_data=data,
        world_size=4,
        nodes=2,
        devices_per_node=2,
        total_steps=1,
        submitted_at=0.0,
        updated_at=0.0,
        assignment=list(assignment) if assignment else None,
    )


def node(name, pool, alive=True, cordoned=False):
    return NodeView(name, pool, {"od": "on-demand"}.get(pool, pool), 2, alive, cordoned)


def test_an_idle_spare_is_enough():
    nodes = [node("od-0", "od"), node("spot-0", "spot"), node("spare-0", "spare")]
    assert spare_shortfall([job()], nodes, {}) == {}


def test_a_consumed_spare_is_replaced_unless_a_node_is_on_its_way():
    nodes = [node("od-0", "od"), node("spot-0", "spot", alive=False), node("spare-0", "spare")]
    recovered = job(assignment=("od-0", "spare-0"))
    assert spare_shortfall([recovered], nodes, {}) == {"spare": ("spare", 1)}
    assert spare_shortfall([recovered], nodes, {"spot": 1}) == {}  # the replacement will be the spare


def test_dead_cordoned_and_foreign_nodes_do_not_count_and_ended_jobs_want_nothing():
    nodes = [
        node("od-0", "od"),
        node("spot-0", "spot"),
        node("spare-0", "spare", cordoned=True),
        node("spare-1", "spare", alive=False),
        node("other-0", "other"),
    ]
    assert spare_shortfall([job(spares=2)], nodes, {}) == {"spare": ("spare", 2)}
    assert spare_shortfall([job(state="succeeded", spares=2)], nodes, {}) == {}
    assert spare_shortfall([job(spares=0)], nodes, {}) == {}


def test_a_spare_added_while_the_only_spare_was_cordoned_is_retired_when_the_cordon_lifts():
    """Issue 17's drill: cordoning the only spare for 12 s added a second one that was never removed."""
    cordoned = [node("od-0", "od"), node("spot-0", "spot"), node("spare-0", "spare", cordoned=True)]
    assert spare_shortfall([job()], cordoned, {}) == {"spare": ("spare", 1)}
    lifted = [node("od-0", "od"), node("spot-0", "spot"), node("spare-0", "spare"), node("spare-p1", "spare")]
    assert spare_shortfall([job()], lifted, {}) == {}
    assert [n.name for n in spare_surplus([job()], lifted, {}, {"spare": 1}, ["spare-p1"])] == ["spare-p1"]
    still = [*cordoned, node("spare-p1", "spare")]  # while the cordon lasts the new spare is the spare
    assert spare_surplus([job()], still, {}, {"spare": 1}, ["spare-p1"]) == []


def test_only_what_orch_added_is_retired_and_never_a_cordoned_or_held_node():
    three = [
        node("od-0", "od"),
        node("spot-0", "spot"),
        node("spare-0", "spare"),
        node("spare-1", "spare"),
        node("spare-2", "spare"),
    ]
    assert spare_surplus([job()], three, {}, {}) == []  # the operator's own nodes stay
    assert [n.name for n in spare_surplus([job()], three, {}, {"spare": 1})] == ["spare-2"]  # newest first
    assert [n.name for n in spare_surplus([job()], three, {}, {"spare": 5})] == ["spare-2", "spare-1"]  # keeps 1
    assert spare_surplus([job(spares=3)], three, {}, {"spare": 2}) == []  # all three are wanted
    assert spare_surplus([job()], three, {"od": 1}, {"spare": 1}, ["spare-0"])[0].name == "spare-0"
    held = job(assignment=("od-0", "spare-2"))  # recovered onto a spare: spot-0 is idle again
    assert [n.name for n in spare_surplus([held], three, {}, {"spare": 2})] == ["spare-1", "spare-0"]
    cordoned = [node("od-0", "od"), node("spot-0", "spot"), node("spare-9", "spare", cordoned=True)]
    assert spare_surplus([job(spares=0)], cordoned, {}, {"spare": 1}) == []


def test_nothing_is_retired_while_a_job_waits_and_everything_added_once_no_job_wants_it():
    nodes = [
        node("od-0", "od"),
        node("spot-0", "spot", alive=False),
        node("spare-0", "spare"),
        node("spare-1", "spare"),
    ]
    waiting = job(state="recovering", assignment=None)
    assert spare_surplus([waiting], nodes, {}, {"spare": 2}) == []
    assert [n.name for n in spare_surplus([job(state="succeeded")], nodes, {}, {"spare": 1})] == ["spare-1"]
    assert len(spare_surplus([], nodes, {}, {"spare": 2})) == 2


def test_the_controller_retires_the_surplus_spare_it_added(tmp_path):
    """The real controller on the simulated provider: the spare's cordon, a new spare, the cordon lifted,
    the new spare retired (listed no more, billed no more) and recorded as such."""
    spec = load_spec(V3_SPEC, "local")  # local-on-demand, local-spot, local-spare; spare_nodes: 1
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    cluster = SimulatedCluster(spec, 1000.0)
    cluster.clock_now = clock.now
    core = ControllerCore(store, cluster, RecordingLauncher(), clock)
    store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC)}))
    core.reconcile()
    clock.advance(1)
    core.reconcile()
    (spare,) = [n.name for n in cluster.nodes() if n.pool_kind == "spare"]
    cluster.cordon(spare)
    core.reconcile()
    provisioned = store.events_of(["node.provisioned"])
    assert [e["data"]["count"] for e in provisioned] == [1]
    added = provisioned[0]["data"]["nodes"][0]
    clock.advance(60)
    cluster.replace(added, clock.now())  # the new spare joins
    core.reconcile()
    assert store.events_of(["node.retired"]) == []  # the cordoned spare does not count
    clock.advance(12)
    cluster.cordon(spare, False)
    core.reconcile()
    retired = store.events_of(["node.retired"])
    assert [e["data"]["nodes"] for e in retired] == [[added]]
    assert added not in {n.name for n in cluster.nodes()} and spare in {n.name for n in cluster.nodes()}
    billed = cluster.bill(clock.now())["by_pool"]["local-spare"]["gpu_hours"]
    clock.advance(3600)
    core.reconcile()
    one_spare = spec.resources.gpus_per_node * 1.0  # only the operator's spare is billed for the hour
    assert cluster.bill(clock.now())["by_pool"]["local-spare"]["gpu_hours"] == pytest.approx(billed + one_spare)
    assert len(store.events_of(["node.retired", "node.provisioned"])) == 2  # no flapping
    restarted = ControllerCore(store, cluster, RecordingLauncher(), clock)  # reads what was added from events
    assert restarted._spares_added() == ({"local-spare": 0}, [added])
