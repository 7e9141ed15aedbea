"""The hot-spare policy: how many nodes to provision so each job keeps its idle spares."""

from orchestrator.control.scheduler import NodeView
from orchestrator.control.spares import spare_shortfall

POOLS = [{"name": "od", "kind": "on-demand", "nodes": 1}, {"name": "spot", "kind": "spot", "nodes": 1},
         {"name": "spare", "kind": "spare", "nodes": 1}]


def job(state="running", assignment=("od-0", "spot-0"), spares=1):
    return {"id": "j", "state": state, "assignment": list(assignment) if assignment else None,
            "devices_per_node": 2, "spec": {"resources": {"pools": POOLS}, "fault_tolerance": {"spare_nodes": spares}}}


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
    nodes = [node("od-0", "od"), node("spot-0", "spot"), node("spare-0", "spare", cordoned=True),
             node("spare-1", "spare", alive=False), node("other-0", "other")]
    assert spare_shortfall([job(spares=2)], nodes, {}) == {"spare": ("spare", 2)}
    assert spare_shortfall([job(state="succeeded", spares=2)], nodes, {}) == {}
    assert spare_shortfall([job(spares=0)], nodes, {}) == {}
