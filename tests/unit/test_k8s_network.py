"""NetworkPolicy that lets the cluster work: evaluated the way the NetworkPolicy API defines ingress
(networking.k8s.io/v1: a pod selected by any Ingress policy accepts only what one of those policies'
rules allows; a rule's peer is a podSelector in the policy's namespace, a namespaceSelector, or both
ANDed in one peer; ports must match). Pod labels as KubeRay v1.7.0 sets them (pod.go labelPod:
ray.io/node-type head|worker; the operator pod app.kubernetes.io/name: kuberay-operator from its
chart's _helpers.tpl), namespaces by kubernetes.io/metadata.name. Enforcement itself is the VPC CNI's
network policy agent, turned on in terraform/main.tf (checked in test_k8s_cluster.py)."""

from __future__ import annotations

import pytest

from orchestrator.k8s.kustomize import build
from tests.conftest import ROOT

POLICIES = [o for o in build(ROOT / "k8s" / "base") if o["kind"] == "NetworkPolicy"]
HEAD = ("orch", {"ray.io/node-type": "head", "app.kubernetes.io/part-of": "orch"})
WORKER = ("orch", {"ray.io/node-type": "worker", "app.kubernetes.io/part-of": "orch"})
DASHBOARD = ("orch", {"app.kubernetes.io/name": "orch-dashboard", "app.kubernetes.io/part-of": "orch"})
OPERATOR = ("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
PROMETHEUS = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
INGRESS = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
STRANGER = ("default", {"app": "something"})


def matches(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_allows(peer: dict, policy_ns: str, source: tuple[str, dict]) -> bool:
    namespace, labels = source
    if "namespaceSelector" in peer:
        ns_ok = matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        ns_ok = namespace == policy_ns
    return ns_ok and matches(peer.get("podSelector", {}), labels)


def allowed(source: tuple[str, dict], target: tuple[str, dict], port: int) -> bool:
    selecting = [
        p
        for p in POLICIES
        if p["metadata"]["namespace"] == target[0]
        and matches(p["spec"]["podSelector"], target[1])
        and "Ingress" in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p["port"] == port for p in ports):
                continue
            if any(peer_allows(peer, policy["metadata"]["namespace"], source) for peer in rule.get("from", [])):
                return True
    return False


@pytest.mark.parametrize(
    "source, target, port, expected",
    [
        (OPERATOR, HEAD, 8265, True),  # KubeRay reads job status from the head's dashboard
        (OPERATOR, WORKER, 8265, False),
        (OPERATOR, HEAD, 6379, False),
        (PROMETHEUS, DASHBOARD, 9400, True),  # orch's exporter
        (PROMETHEUS, WORKER, 8080, True),  # Ray's metrics port (KubeRay's metrics-export-port)
        (PROMETHEUS, HEAD, 8080, True),
        (INGRESS, DASHBOARD, 8267, True),
        (INGRESS, HEAD, 8265, False),
        (WORKER, HEAD, 6379, True),  # GCS inside the namespace
        (HEAD, WORKER, 10001, True),
        (STRANGER, HEAD, 6379, False),
        (STRANGER, DASHBOARD, 8267, False),
    ],
)
def test_who_may_reach_what(source, target, port, expected):
    assert allowed(source, target, port) is expected
