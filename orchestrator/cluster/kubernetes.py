"""The Kubernetes node provider: nodes, interruption signals, cordon/drain and replacement through
the ``kubernetes`` client.

Conventions shared with the manifests in ``k8s/``: GPU nodes carry ``orch.dev/pool`` and
``orch.dev/pool-kind`` labels (and ``orch.dev/rack`` for topology); each Ray worker pod takes a whole
node and labels its raylet ``orch-node=<node name>``, so the node names here are the ones the
scheduler and the ledger use. Interruption signals (the AWS Node Termination Handler's taints and
events, ``NotReady``) come from ``notice_windows.yaml``, not from code. A node's topology is EKS's
network topology labels (``topology.k8s.aws/network-node-layer-1..3``, set on p5 and other
instance types that support them), the same labels Kueue's topology-aware placement uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.cluster.notices import ProviderNotices
from orchestrator.cluster.provider import Draining, NodeView, Notices, Provisioning, Retiring
from orchestrator.errors import OrchError
from orchestrator.state.store import StateStore

POOL_LABEL, KIND_LABEL = "orch.dev/pool", "orch.dev/pool-kind"
NETWORK_LAYERS = (
    "topology.k8s.aws/network-node-layer-1",
    "topology.k8s.aws/network-node-layer-2",
    "topology.k8s.aws/network-node-layer-3",
)
GPU_RESOURCE = "nvidia.com/gpu"
RAY_GROUP, RAY_VERSION, RAY_PLURAL = "ray.io", "v1", "rayclusters"


class KubernetesError(OrchError):
    """A refused or failed Kubernetes API call, said plainly."""


def explain(exc: Exception, doing: str) -> KubernetesError:
    """An ``ApiException`` as a message a platform engineer can act on."""
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):
        return KubernetesError(f"{doing}: {exc}")
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except ValueError:
        message = exc.reason
    hint = {
        401: "the credentials were not accepted; check the kubeconfig or service-account token",
        403: "orch's service account lacks this permission; apply k8s/base/rbac.yaml",
        404: "it does not exist (wrong namespace or name?)",
        409: "it already exists or was changed meanwhile; delete it or pick another name",
        422: "the API server rejected the object as invalid",
        429: "refused for now (a PodDisruptionBudget or rate limit); retry later",
    }.get(exc.status, "")
    return KubernetesError(f"{doing}: {exc.status} {message}" + (f" ({hint})" if hint else ""))


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    """Read a field from a kubernetes model object or a plain dict (watch streams give either)."""
    for part in path:
        if obj is None:
            return default
        if isinstance(obj, dict):
            obj = obj.get(part, obj.get(_camel(part)))
        else:
            obj = getattr(obj, part, None)
    return default if obj is None else obj


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def node_view(node: Any, cordons: dict[str, str]) -> NodeView | None:
    labels = _get(node, "metadata", "labels", default={}) or {}
    pool = labels.get(POOL_LABEL)
    if pool is None:
        return None
    name = _get(node, "metadata", "name")
    allocatable = _get(node, "status", "allocatable", default={}) or {}
    devices = int(str(allocatable.get(GPU_RESOURCE, "0")))
    ready = any(
        _get(c, "type") == "Ready" and _get(c, "status") == "True"
        for c in _get(node, "status", "conditions", default=[]) or []
    )
    cordoned = bool(_get(node, "spec", "unschedulable", default=False)) or name in cordons
    return NodeView(
        name=name,
        pool=pool,
        pool_kind=labels.get(KIND_LABEL, "on-demand"),
        devices=devices,
        alive=ready,
        cordoned=cordoned,
        topology=topology_of(labels),
    )


def topology_of(labels: dict[str, str]) -> str:
    """The node's place in the network: its EKS network-node layers, spine to leaf ('' if unknown)."""
    return "/".join(labels[k] for k in NETWORK_LAYERS if labels.get(k))


@dataclass(frozen=True)
class NodeSignal:
    node: str
    kind: str  # interruption | rebalance | maintenance | not_ready
    source: str  # the taint key, event reason or condition that said so


def signals_from_node(node: Any, notices: ProviderNotices) -> list[NodeSignal]:
    name = _get(node, "metadata", "name")
    taints = {_get(t, "key") for t in (_get(node, "spec", "taints", default=[]) or [])}
    found = [NodeSignal(name, s.kind, s.taint) for s in notices.signals if s.taint and s.taint in taints]
    for condition in _get(node, "status", "conditions", default=[]) or []:
        if _get(condition, "type") == "Ready" and _get(condition, "status") != "True":
            found.append(NodeSignal(name, "not_ready", f"Ready={_get(condition, 'status')}"))
    return found


def signal_from_event(event: Any, notices: ProviderNotices) -> NodeSignal | None:
    if _get(event, "involved_object", "kind") != "Node":
        return None
    reason = _get(event, "reason")
    for signal in notices.signals:
        if signal.event_reason and signal.event_reason == reason:
            return NodeSignal(_get(event, "involved_object", "name"), signal.kind, reason)
    return None


class KubernetesNodeProvider(Provisioning, Retiring, Draining, Notices):
    """Nodes of the cluster orch may use, and the operations on them (hot spares by scaling a worker
    group up, and back down by naming the pod to go; cordon and drain). Notices come from
    ``watch_signals``; ``control/notices.py`` acts on them."""

    def __init__(
        self,
        api_client,
        store: StateStore,
        namespace: str = "orch",
        ray_cluster: str = "orch",
        notices: ProviderNotices | None = None,
    ):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.store, self.namespace, self.ray_cluster = store, namespace, ray_cluster
        self.notices = notices  # the cloud's window (notice_windows.yaml), when known

    def notice_seconds(self, node: str) -> float:
        return float(self.notices.notice_seconds) if self.notices is not None else 0.0

    def nodes(self) -> list[NodeView]:
        try:
            listed = self.core.list_node(label_selector=POOL_LABEL)
        except Exception as exc:
            raise explain(exc, "listing nodes") from None
        cordons = self.store.cordoned_nodes()
        return [v for v in (node_view(n, cordons) for n in listed.items) if v is not None]

    def cordon(self, node: str, reason: str, actor: str, cordoned: bool = True, record: bool = True) -> None:
        """Mark the Kubernetes node (un)schedulable and record orch's cordon with its reason (unless
        ``record`` is false: the notice path has recorded its own, which the controller reads)."""
        try:
            self.core.patch_node(node, {"spec": {"unschedulable": cordoned}})
        except Exception as exc:
            raise explain(exc, f"{'cordoning' if cordoned else 'uncordoning'} node {node}") from None
        if record:
            self.store.set_cordon(node, cordoned, reason, actor)

    def drain(self, node: str, reason: str, actor: str, grace_seconds: int = 120) -> list[str]:
        """Cordon, then evict the node's Ray pods with their grace period (PodDisruptionBudgets apply)."""
        self.cordon(node, f"drain: {reason}", actor)
        return [f"{self.namespace}/{name}" for name, _ in self.evict_ray_pods(node, actor, grace_seconds)]

    def evict_ray_pods(self, node: str, actor: str, grace_seconds: int = 120) -> list[tuple[str, str]]:
        """Evict the Ray pods of orch's namespace on ``node``: (pod, worker group) of each. Only this
        namespace: the controller's Role is namespaced, and other namespaces' pods are not orch's."""
        from kubernetes import client

        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, field_selector=f"spec.nodeName={node}", label_selector="ray.io/is-ray-node=yes"
            ).items
        except Exception as exc:
            raise explain(exc, f"listing the pods on {node}") from None
        evicted = []
        for pod in pods:
            name, namespace = pod.metadata.name, pod.metadata.namespace
            body = client.V1Eviction(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                delete_options=client.V1DeleteOptions(grace_period_seconds=grace_seconds),
            )
            try:
                self.core.create_namespaced_pod_eviction(name, namespace, body)
            except Exception as exc:
                raise explain(exc, f"evicting pod {namespace}/{name} from {node}") from None
            evicted.append((name, (pod.metadata.labels or {}).get("ray.io/group", "")))
        self.store.add_event(
            "node.drain",
            f"{node}: evicted {len(evicted)} Ray pod(s)",
            data={"pods": [name for name, _ in evicted]},
            actor=actor,
        )
        return evicted

    def _worker_groups(self) -> list[dict]:
        try:
            cluster = self.custom.get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, self.namespace, RAY_PLURAL, self.ray_cluster
            )
        except Exception as exc:
            raise explain(exc, f"reading RayCluster {self.namespace}/{self.ray_cluster}") from None
        return cluster["spec"].get("workerGroupSpecs", [])

    def _patch_group(self, group: str, changes: dict[str, Any], doing: str) -> None:
        groups = self._worker_groups()
        index = next((i for i, g in enumerate(groups) if g.get("groupName") == group), None)
        if index is None:
            raise KubernetesError(
                f"{doing}: RayCluster {self.ray_cluster} has no worker group '{group}' "
                f"(groups: {', '.join(g.get('groupName', '?') for g in groups)})"
            )
        patch = [
            {
                "op": "add" if field not in groups[index] else "replace",
                "path": f"/spec/workerGroupSpecs/{index}/{field}",
                "value": value,
            }
            for field, value in changes.items()
        ]
        try:
            self.custom.patch_namespaced_custom_object(
                RAY_GROUP,
                RAY_VERSION,
                self.namespace,
                RAY_PLURAL,
                self.ray_cluster,
                patch,
                _content_type="application/json-patch+json",
            )
        except Exception as exc:
            raise explain(exc, doing) from None

    def replace_worker(self, group: str, pod: str, actor: str) -> None:
        """Ask KubeRay to delete ``pod`` and start a new one in its group (the count is unchanged)."""
        replicas = next(g.get("replicas", 0) for g in self._worker_groups() if g.get("groupName") == group)
        self._patch_group(
            group,
            {"replicas": replicas, "scaleStrategy": {"workersToDelete": [pod]}},
            f"replacing worker {pod} of group {group}",
        )
        self.store.add_event(
            "node.replace",
            f"{pod}: replacement requested in worker group {group}",
            data={"group": group, "pod": pod},
            actor=actor,
        )

    def retire(self, node: str, reason: str) -> bool:
        """Scale the worker group of ``node``'s Ray pod down by that very pod, as the Ray autoscaler
        does (``replicas`` one less and ``scaleStrategy.workersToDelete: [pod]`` in one patch): KubeRay
        deletes the named pods whatever ``replicas`` says, and would otherwise pick pods at random to
        meet a smaller count (or none at all with in-tree autoscaling on)."""
        pods = self._ray_pods_on(node)
        if not pods:
            return True  # no Ray pod there: nothing of orch's to remove
        for pod, group in pods:
            groups = self._worker_groups()
            replicas = next((g.get("replicas", 0) for g in groups if g.get("groupName") == group), None)
            if replicas is None:
                raise KubernetesError(
                    f"retiring node {node}: RayCluster {self.ray_cluster} has no worker group '{group}' for pod {pod}"
                )
            self._patch_group(
                group,
                {"replicas": max(0, replicas - 1), "scaleStrategy": {"workersToDelete": [pod]}},
                f"retiring worker {pod} of group {group} ({reason})",
            )
        return True

    def _ray_pods_on(self, node: str) -> list[tuple[str, str]]:
        """(pod, worker group) of orch's Ray worker pods on ``node``."""
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, field_selector=f"spec.nodeName={node}", label_selector="ray.io/node-type=worker"
            ).items
        except Exception as exc:
            raise explain(exc, f"listing the Ray pods on {node}") from None
        return [(p.metadata.name, (p.metadata.labels or {}).get("ray.io/group", "")) for p in pods]

    def scale_group(self, group: str, replicas: int, actor: str) -> None:
        """Keep ``replicas`` pods in a worker group (hot spares: the spare group's size)."""
        self._patch_group(group, {"replicas": replicas}, f"scaling worker group {group} to {replicas}")
        self.store.add_event(
            "node.scale", f"worker group {group}: {replicas} replicas", data={"group": group}, actor=actor
        )

    # hot spares (the controller's policy): a worker group per pool, named like the pool

    def coming(self) -> dict[str, int]:
        """Worker pods not running yet, by group (= pool): nodes on their way."""
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector="ray.io/node-type=worker").items
        except Exception as exc:
            raise explain(exc, "listing the Ray worker pods") from None
        counts: dict[str, int] = {}
        for pod in pods:
            if pod.status is not None and pod.status.phase == "Pending":
                group = (pod.metadata.labels or {}).get("ray.io/group", "")
                counts[group] = counts.get(group, 0) + 1
        return counts

    def provision(self, pool: str, kind: str, count: int, devices: int) -> list[str]:
        replicas = next((g.get("replicas", 0) for g in self._worker_groups() if g.get("groupName") == pool), None)
        if replicas is None:
            raise KubernetesError(f"no worker group '{pool}' in RayCluster {self.ray_cluster} for the hot spares")
        self.scale_group(pool, replicas + count, "orch")
        return [f"{pool} +{count}"]
