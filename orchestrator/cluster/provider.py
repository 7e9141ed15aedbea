"""The node provider seam: the controller sees nodes only through this interface.

``RayNodeProvider`` reads the inventory from the connected Ray cluster's node labels (``orch-node``,
``orch-pool``, ``orch-pool-kind``) and devices (``orch_device``, or GPUs), which works for the
embedded cluster and for KubeRay pods started with the same labels; cordons are orch's own, kept
in the state store. The embedded cluster adds node loss and replacement (``EmbeddedCluster``);
the Kubernetes and simulated providers implement the same protocol.

The core protocol is one method (``nodes``). What a provider can do beyond listing is declared as
small opt-in capabilities, as Kueue's ``JobWith*`` interfaces are, and checked with ``isinstance``
on these runtime-checkable protocols: ``Provisioning`` (new nodes for hot spares), ``Retiring`` (an
idle node removed for good: a hot spare that became surplus), ``Draining`` (cordon and evict at the
infrastructure level), ``Notices`` (a warning before a node is taken).

Retiring on Ray is Ray's own idle drain (the GCS ``DrainNode`` call with
``DRAIN_NODE_REASON_IDLE_TERMINATION``, as autoscaler v2 and Ray 2.60's ``ray drain-node`` use it):
the raylet refuses when anything runs on it, else it shuts down and the GCS records the node dead
with reason ``AUTOSCALER_DRAIN_IDLE``. Such a node was removed on purpose, so it leaves orch's
inventory instead of showing as a lost node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from orchestrator.cluster.embedded import EmbeddedCluster

if TYPE_CHECKING:
    from orchestrator.state.store import StateStore


@dataclass(frozen=True)
class NodeView:
    """One node as the scheduler, the ledger and the dashboard see it, whichever provider listed it."""

    name: str
    pool: str
    pool_kind: str  # on-demand | spot | spare
    devices: int
    alive: bool = True
    cordoned: bool = False
    topology: str = ""  # rack / network block label, for locality


@runtime_checkable
class NodeProvider(Protocol):
    def nodes(self) -> list[NodeView]:
        """Every node orch may use, alive or not, with its pool, devices and cordon."""


@runtime_checkable
class Provisioning(Protocol):
    """Can add nodes to a pool (the controller keeps hot spares with it)."""

    def coming(self) -> dict[str, int]:
        """Nodes asked for and not up yet, by pool."""

    def provision(self, pool: str, kind: str, count: int, devices: int) -> list[str]:
        """Ask for ``count`` new nodes in ``pool``; what was asked for, a name each (or a summary)."""


@runtime_checkable
class Retiring(Protocol):
    """Can remove an idle node for good (the controller retires hot spares it no longer needs, so
    they stop being paid for)."""

    def retire(self, node: str, reason: str) -> bool:
        """Take idle ``node`` out of the cluster; False when the infrastructure refuses (it is busy)."""


@runtime_checkable
class Draining(Protocol):
    """Can cordon and drain nodes in the infrastructure itself (not only in orch's own cordon list)."""

    def cordon(self, node: str, reason: str, actor: str, cordoned: bool = True) -> None:
        """Mark ``node`` (un)schedulable for everything, and record orch's cordon."""

    def drain(self, node: str, reason: str, actor: str) -> list[str]:
        """Cordon, then evict what runs on ``node``; what was evicted."""


@runtime_checkable
class Notices(Protocol):
    """Warns before it takes a node away (a spot reclaim, maintenance), so work can be saved first."""

    def notice_seconds(self, node: str) -> float:
        """How long before ``node`` goes a notice comes (0: none, it is taken abruptly)."""


def retired(raw: dict) -> bool:
    """A node Ray drained as idle and shut down on purpose (a retired spare), not a lost one."""
    from ray.core.generated.common_pb2 import NodeDeathInfo

    return not raw.get("Alive") and raw.get("DeathReason") == NodeDeathInfo.Reason.Value("AUTOSCALER_DRAIN_IDLE")


def node_views_from_ray(ray_nodes: list[dict], cordoned: dict[str, str]) -> list[NodeView]:
    """Ray's node table -> orch's nodes (a replaced node appears once: its live raylet wins; a retired
    node not at all)."""
    chosen: dict[str, dict] = {}
    for raw in ray_nodes:
        labels = raw.get("Labels") or {}
        name = labels.get("orch-node")
        if not name or labels.get("orch-pool-kind") == "control" or retired(raw):
            continue
        if name not in chosen or (raw["Alive"] and not chosen[name]["Alive"]):
            chosen[name] = raw
    views = []
    for name, raw in sorted(chosen.items()):
        labels, resources = raw.get("Labels") or {}, raw.get("Resources") or {}
        devices = int(resources.get("orch_device", resources.get("GPU", 0)))
        views.append(
            NodeView(
                name=name,
                pool=labels.get("orch-pool", "default"),
                pool_kind=labels.get("orch-pool-kind", "on-demand"),
                devices=devices,
                alive=bool(raw["Alive"]),
                cordoned=name in cordoned,
                topology=labels.get("orch-topology", ""),
            )
        )
    return views


class RayNodeProvider(NodeProvider, Retiring):
    """Any Ray cluster whose raylets carry orch's labels: listing, and retiring an idle node."""

    # How long Ray's node table may still list a dead raylet as alive: the GCS declares it dead after its
    # health check's failure threshold (the embedded cluster: 3 refused checks 0.5 s apart, about 2 s,
    # ``embedded.py: EMBEDDED_RAY_ENV``), while the node's workers are gone at once. The
    # controller waits out this lag before placing a gang that lost its workers (``ControllerCore``).
    death_lag_s = 5.0

    def __init__(self, store: StateStore):
        self.store = store

    def nodes(self) -> list[NodeView]:
        import ray

        return node_views_from_ray(ray.nodes(), self.store.cordoned_nodes())

    def retire(self, node: str, reason: str) -> bool:
        """Ray's idle drain of ``node``'s live raylet (see the module doc); False if Ray refuses."""
        import ray
        from ray.core.generated import autoscaler_pb2

        ids = [
            raw["NodeID"] for raw in ray.nodes() if raw["Alive"] and (raw.get("Labels") or {}).get("orch-node") == node
        ]
        if not ids:
            return True  # no live raylet: gone already
        gcs = ray._private.worker.global_worker.gcs_client
        idle = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION")
        return all(gcs.drain_node(node_id, idle, reason, 0)[0] for node_id in ids)


class EmbeddedNodeProvider(RayNodeProvider, Provisioning):
    """The embedded cluster: Ray's view of its raylets, plus provisioning (a new raylet per node) and
    retiring (Ray's idle drain, then the node leaves ``cluster.json`` and its processes are ended)."""

    def __init__(self, store: StateStore, home):
        super().__init__(store)
        self.cluster = EmbeddedCluster(home)

    def coming(self) -> dict[str, int]:
        return {}  # 'ray start' returns once the raylet is registered: nothing is ever on its way

    def provision(self, pool: str, kind: str, count: int, devices: int) -> list[str]:
        return [self.cluster.add_node(pool, kind, devices).name for _ in range(count)]

    def retire(self, node: str, reason: str) -> bool:
        if not super().retire(node, reason):
            return False
        self.cluster.remove_node(node)
        return True
