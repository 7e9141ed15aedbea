"""Provider capabilities are declared, small runtime-checkable protocols (docs/architecture.md's table):
the controller asks ``isinstance(provider, Provisioning)`` instead of probing with ``hasattr``."""

from __future__ import annotations

import pytest
from kubernetes import client

from orchestrator.cluster.kubernetes import KubernetesNodeProvider
from orchestrator.cluster.notices import notice_windows
from orchestrator.cluster.provider import (
    Draining,
    EmbeddedNodeProvider,
    NodeProvider,
    Notices,
    Provisioning,
    RayNodeProvider,
    Retiring,
)
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC


@pytest.fixture
def store(tmp_path):
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def capabilities(provider) -> set[str]:
    return {p.__name__ for p in (NodeProvider, Provisioning, Retiring, Draining, Notices) if isinstance(provider, p)}


def test_each_provider_declares_what_it_can_do(store, tmp_path):
    spec = load_spec(str(V3_SPEC), "local")  # pools: on-demand, spot with a 30 s notice, spare
    kubernetes = KubernetesNodeProvider(client.ApiClient(), store, notices=notice_windows()["aws"])
    assert capabilities(RayNodeProvider(store)) == {"NodeProvider", "Retiring"}
    assert capabilities(EmbeddedNodeProvider(store, tmp_path)) == {"NodeProvider", "Provisioning", "Retiring"}
    assert capabilities(kubernetes) == {"NodeProvider", "Provisioning", "Retiring", "Draining", "Notices"}
    assert capabilities(SimulatedCluster(spec)) == {"NodeProvider", "Provisioning", "Retiring", "Notices"}
    assert kubernetes.notice_seconds("any-node") == notice_windows()["aws"].notice_seconds
    simulated = SimulatedCluster(spec)
    by_pool = {n.pool: simulated.notice_seconds(n.name) for n in simulated.nodes()}
    assert by_pool == {"local-on-demand": 0.0, "local-spot": 30.0, "local-spare": 0.0}


def test_a_node_ray_drained_as_idle_leaves_the_inventory_a_lost_one_stays():
    """Ray's node table keeps dead nodes with their death reason (ray/core/generated/common_pb2.py,
    ``NodeDeathInfo.Reason``; Ray 2.60.0): a retired node (``AUTOSCALER_DRAIN_IDLE``, the reason its
    idle drain records) is gone on purpose; one that died unexpectedly is a lost node, shown dead."""
    from ray.core.generated.common_pb2 import NodeDeathInfo

    from orchestrator.cluster.provider import node_views_from_ray

    def raw(name, alive, reason="UNSPECIFIED"):
        return {
            "Alive": alive,
            "DeathReason": NodeDeathInfo.Reason.Value(reason),
            "Resources": {"orch_device": 2},
            "Labels": {"orch-node": name, "orch-pool": "local-spare", "orch-pool-kind": "spare"},
        }

    views = node_views_from_ray(
        [
            raw("node-4", False, "AUTOSCALER_DRAIN_IDLE"),
            raw("node-2", False, "UNEXPECTED_TERMINATION"),
            raw("node-3", True),
        ],
        {},
    )
    assert [(v.name, v.alive) for v in views] == [("node-2", False), ("node-3", True)]
    again = node_views_from_ray([raw("node-4", False, "AUTOSCALER_DRAIN_IDLE"), raw("node-4", True)], {})
    assert [(v.name, v.alive) for v in again] == [("node-4", True)]  # a new node under the name is listed
