"""Kueue objects for orch's cluster: gang admission, team quotas and topology-aware placement.

Kueue admits a RayJob or RayCluster (labelled ``kueue.x-k8s.io/queue-name``, the team's LocalQueue)
as a whole or not at all, so a 256-node gang never holds half the nodes while waiting for the rest,
and a long-lived RayCluster and a RayJob never split the cluster between them. One ClusterQueue per
team carries the device quota orch's state store already has (``orch team set --quota-devices``);
all teams share one cohort so idle quota can be borrowed. The ResourceFlavors match the node groups'
``orch.dev/pool-kind`` labels and taints (terraform/main.tf); the Topology's levels are EKS's network
topology labels, which the RayJob's worker groups name in their topology annotations
(orchestrator/k8s/render.py). orch's own scheduler stays the embedded cluster's default; on
Kubernetes, Kueue decides admission and orch places ranks inside the admitted cluster.

Shapes per Kueue v0.14 (kueue.x-k8s.io/v1beta1; Topology v1alpha1), the chart terraform/helm.tf pins.
"""

from __future__ import annotations

import math

from orchestrator.k8s.render import NETWORK_LAYERS, dns_name

API, TOPOLOGY_API = "kueue.x-k8s.io/v1beta1", "kueue.x-k8s.io/v1alpha1"
TOPOLOGY = "eks-network"
COHORT = "orch"
GPU_KINDS = ("on-demand", "spot", "spare")
NODE = {"cpu": 192, "memory_gi": 2048, "gpus": 8, "efa": 32}  # p5.48xlarge, as terraform's default
SYSTEM = {"cpu": 48, "memory_gi": 192}  # 3 x m7i.4xlarge system nodes: the Ray head's room
RESOURCES = ["cpu", "memory", "nvidia.com/gpu", "vpc.amazonaws.com/efa"]


def resource_flavors() -> list[dict]:
    flavors = []
    for kind in GPU_KINDS:
        spec = {"nodeLabels": {"orch.dev/pool-kind": kind}, "topologyName": TOPOLOGY}
        if kind != "on-demand":
            spec["nodeTaints"] = [{"key": "orch.dev/pool-kind", "value": kind, "effect": "NoSchedule"}]
        flavors.append({"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": kind}, "spec": spec})
    flavors.append(
        {
            "apiVersion": API,
            "kind": "ResourceFlavor",
            "metadata": {"name": "system"},
            "spec": {"nodeLabels": {"orch.dev/pool-kind": "system"}},
        }
    )
    return flavors


def topology() -> dict:
    return {
        "apiVersion": TOPOLOGY_API,
        "kind": "Topology",
        "metadata": {"name": TOPOLOGY},
        "spec": {
            "levels": [{"nodeLabel": label} for label in NETWORK_LAYERS] + [{"nodeLabel": "kubernetes.io/hostname"}]
        },
    }


def _quota(devices: int) -> dict[str, object]:
    nodes = math.ceil(devices / NODE["gpus"])
    return {
        "cpu": nodes * NODE["cpu"],
        "memory": f"{nodes * NODE['memory_gi']}Gi",
        "nvidia.com/gpu": devices,
        "vpc.amazonaws.com/efa": nodes * NODE["efa"],
    }


def team_queues(quotas: dict[str, int], namespace: str = "orch") -> list[dict]:
    """A ClusterQueue (quota in devices, on any GPU flavor) and a LocalQueue per team."""
    objects = []
    for team, devices in sorted(quotas.items()):
        name = dns_name(team)
        gpu_flavors = [
            {"name": kind, "resources": [{"name": r, "nominalQuota": v} for r, v in _quota(devices).items()]}
            for kind in GPU_KINDS
        ]
        system = {
            "name": "system",
            "resources": [
                {"name": "cpu", "nominalQuota": SYSTEM["cpu"]},
                {"name": "memory", "nominalQuota": f"{SYSTEM['memory_gi']}Gi"},
                {"name": "nvidia.com/gpu", "nominalQuota": 0},
                {"name": "vpc.amazonaws.com/efa", "nominalQuota": 0},
            ],
        }
        objects.append(
            {
                "apiVersion": API,
                "kind": "ClusterQueue",
                "metadata": {"name": name},
                "spec": {
                    "cohort": COHORT,
                    "namespaceSelector": {},
                    "queueingStrategy": "StrictFIFO",
                    "resourceGroups": [{"coveredResources": RESOURCES, "flavors": gpu_flavors + [system]}],
                },
            }
        )
        objects.append(
            {
                "apiVersion": API,
                "kind": "LocalQueue",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"clusterQueue": name},
            }
        )
    return objects
