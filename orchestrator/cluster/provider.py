"""The node provider seam: the controller sees nodes only through this interface.

``RayNodeProvider`` reads the inventory from the connected Ray cluster's node labels (``orch-node``,
``orch-pool``, ``orch-pool-kind``) and devices (``orch_device``, or GPUs), which works for the
embedded cluster and for KubeRay pods started with the same labels; cordons are orch's own, kept
in the state store. The embedded cluster adds node loss and replacement (``EmbeddedCluster``);
the Kubernetes and simulated providers implement the same protocol.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.control.scheduler import NodeView
from orchestrator.state.store import StateStore


class NodeProvider(Protocol):
    def nodes(self) -> list[NodeView]:
        """Every node orch may use, alive or not, with its pool, devices and cordon."""


def node_views_from_ray(ray_nodes: list[dict], cordoned: dict[str, str]) -> list[NodeView]:
    """Ray's node table -> orch's nodes (a replaced node appears once: its live raylet wins)."""
    chosen: dict[str, dict] = {}
    for raw in ray_nodes:
        labels = raw.get("Labels") or {}
        name = labels.get("orch-node")
        if not name or labels.get("orch-pool-kind") == "control":
            continue
        if name not in chosen or (raw["Alive"] and not chosen[name]["Alive"]):
            chosen[name] = raw
    views = []
    for name, raw in sorted(chosen.items()):
        labels, resources = raw.get("Labels") or {}, raw.get("Resources") or {}
        devices = int(resources.get("orch_device", resources.get("GPU", 0)))
        views.append(NodeView(name=name, pool=labels.get("orch-pool", "default"),
                              pool_kind=labels.get("orch-pool-kind", "on-demand"), devices=devices,
                              alive=bool(raw["Alive"]), cordoned=name in cordoned,
                              topology=labels.get("orch-topology", "")))
    return views


class RayNodeProvider:
    def __init__(self, store: StateStore):
        self.store = store

    def nodes(self) -> list[NodeView]:
        import ray

        return node_views_from_ray(ray.nodes(), self.store.cordoned_nodes())


class EmbeddedNodeProvider(RayNodeProvider):
    """The embedded cluster: Ray's view of its raylets, plus provisioning (a new raylet per node)."""

    def __init__(self, store: StateStore, home):
        super().__init__(store)
        from orchestrator.cluster.embedded import EmbeddedCluster

        self.cluster = EmbeddedCluster(home)

    def coming(self) -> dict[str, int]:
        return {}  # 'ray start' returns once the raylet is registered: nothing is ever on its way

    def provision(self, pool: str, kind: str, count: int, devices: int) -> list[str]:
        return [self.cluster.add_node(pool, kind, devices).name for _ in range(count)]
