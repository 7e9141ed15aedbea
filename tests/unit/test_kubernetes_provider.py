"""The Kubernetes node provider against a local server replaying the API's responses and watch
streams (tests/k8s_responses/, in the API's own format), and on the client's own model objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from orchestrator.cluster.kubernetes import (InterruptionResponder, KubernetesError, KubernetesNodeProvider,
                                             node_view, signal_from_event, signals_from_node, watch_signals)
from orchestrator.cluster.notices import NOTICE_CORDON_PREFIX, notice_windows
from orchestrator.clock import ManualClock
from orchestrator.state.store import StateStore
from tests.helpers.k8s_replay import ReplayServer, status_body

RESPONSES = Path(__file__).parents[1] / "k8s_responses"
AWS, GCP = notice_windows()["aws"], notice_windows()["gcp"]


def recorded(name: str):
    return json.loads((RESPONSES / name).read_text())


@pytest.fixture
def store(tmp_path):
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=ManualClock(1_800_000_000.0))


def test_notice_windows_are_data():
    assert AWS.notice_seconds == 120 and GCP.notice_seconds == 30
    assert any(s.taint == "aws-node-termination-handler/spot-itn" for s in AWS.signals)


def test_signals_from_the_clients_model_objects():
    spot = client.V1Node(metadata=client.V1ObjectMeta(name="n1", labels={"orch.dev/pool": "spot",
                                                                         "orch.dev/pool-kind": "spot"}),
                         spec=client.V1NodeSpec(taints=[client.V1Taint(key="aws-node-termination-handler/spot-itn",
                                                                        effect="NoSchedule")]),
                         status=client.V1NodeStatus(allocatable={"nvidia.com/gpu": "8"}, conditions=[
                             client.V1NodeCondition(type="Ready", status="True")]))
    assert signals_from_node(spot, AWS) == [signals_from_node(spot, AWS)[0]]
    assert signals_from_node(spot, AWS)[0].kind == "interruption"
    assert signals_from_node(spot, GCP) == []  # GKE does not use the AWS handler's taint
    gke = client.V1Node(metadata=client.V1ObjectMeta(name="g1"), spec=client.V1NodeSpec(taints=[
        client.V1Taint(key="cloud.google.com/impending-node-termination", effect="NoSchedule")]))
    assert [s.kind for s in signals_from_node(gke, GCP)] == ["interruption"]
    lost = client.V1Node(metadata=client.V1ObjectMeta(name="n2"), status=client.V1NodeStatus(conditions=[
        client.V1NodeCondition(type="Ready", status="Unknown")]))
    assert [s.kind for s in signals_from_node(lost, AWS)] == ["not_ready"]
    view = node_view(spot, {})
    assert view.devices == 8 and view.alive and view.pool_kind == "spot" and not view.cordoned
    event = client.CoreV1Event(metadata=client.V1ObjectMeta(name="e"), involved_object=client.V1ObjectReference(
        kind="Node", name="n1"), reason="SpotInterruption")
    assert signal_from_event(event, AWS).kind == "interruption"


def test_nodes_cordon_and_errors_over_http(store):
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", body=recorded("nodes.json"), times=1)
        api.on("GET", "/api/v1/nodes", status=403, body=status_body(403, "Forbidden", 'nodes is forbidden: User '
               '"system:serviceaccount:orch:orch" cannot list resource "nodes" in API group "" at the cluster scope'))
        api.on("PATCH", "/api/v1/nodes/ip-10-0-1-11", body=recorded("nodes.json")["items"][0])
        provider = KubernetesNodeProvider(api.api_client(), store)
        views = {v.name: v for v in provider.nodes()}
        assert sent_query(api, "GET", "/api/v1/nodes")["labelSelector"] == ["orch.dev/pool"]
        assert views["ip-10-0-1-11"].devices == 8 and views["ip-10-0-1-11"].alive
        assert not views["ip-10-0-2-22"].alive  # Ready=Unknown
        assert views["ip-10-0-3-31"].cordoned and views["ip-10-0-3-31"].pool_kind == "spare"
        assert views["ip-10-0-2-21"].topology == "rack-b"
        provider.cordon("ip-10-0-1-11", "bad fan", "user:ops")
        patch = api.sent("PATCH", "/api/v1/nodes/ip-10-0-1-11")[0]
        assert patch.body == {"spec": {"unschedulable": True}}
        assert store.cordoned_nodes()["ip-10-0-1-11"] == "bad fan"
        with pytest.raises(KubernetesError, match="403 nodes is forbidden.*rbac"):
            provider.nodes()


def sent_query(api, method, path):
    return api.sent(method, path)[0].query


def test_drain_evicts_the_ray_pods_with_their_grace_period(store):
    with ReplayServer() as api:
        api.on("PATCH", "/api/v1/nodes/ip-10-0-2-21", body={})
        api.on("GET", "/api/v1/pods", body=recorded("pods_on_node.json"))
        api.on("POST", "/api/v1/namespaces/orch/pods/orch-gpu-spot-worker-7xk2p/eviction", status=201,
               body=recorded("eviction_created.json"), times=1)
        api.on("POST", "/api/v1/namespaces/orch/pods/orch-gpu-spot-worker-7xk2p/eviction", status=429,
               body=status_body(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption "
                                                         "budget."))
        provider = KubernetesNodeProvider(api.api_client(), store)
        assert provider.drain("ip-10-0-2-21", "kernel update", "user:ops", grace_seconds=90) == [
            "orch/orch-gpu-spot-worker-7xk2p"]
        query = sent_query(api, "GET", "/api/v1/pods")
        assert query["fieldSelector"] == ["spec.nodeName=ip-10-0-2-21"]
        eviction = api.sent("POST", "/api/v1/namespaces/orch/pods/.*/eviction")[0].body
        assert eviction["deleteOptions"]["gracePeriodSeconds"] == 90 and eviction["metadata"]["namespace"] == "orch"
        assert store.cordoned_nodes()["ip-10-0-2-21"] == "drain: kernel update"
        with pytest.raises(KubernetesError, match="429 Cannot evict.*PodDisruptionBudget"):
            provider.drain("ip-10-0-2-21", "again", "user:ops")


RAY_CLUSTER = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "orch", "namespace": "orch"},
               "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": []}}},
                        "workerGroupSpecs": [{"groupName": "gpu-on-demand", "replicas": 128},
                                             {"groupName": "gpu-spot", "replicas": 128},
                                             {"groupName": "gpu-spare", "replicas": 4}]}}


def test_replace_and_scale_patch_the_raycluster(store):
    path = "/apis/ray.io/v1/namespaces/orch/rayclusters/orch"
    with ReplayServer() as api:
        api.on("GET", path, body=RAY_CLUSTER)
        api.on("PATCH", path, body=RAY_CLUSTER)
        provider = KubernetesNodeProvider(api.api_client(), store)
        provider.replace_worker("gpu-spot", "orch-gpu-spot-worker-7xk2p", "orch")
        patch = api.sent("PATCH", path)[0]
        assert patch.headers["content-type"] == "application/json-patch+json"
        assert patch.body == [{"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 128},
                              {"op": "add", "path": "/spec/workerGroupSpecs/1/scaleStrategy",
                               "value": {"workersToDelete": ["orch-gpu-spot-worker-7xk2p"]}}]
        provider.scale_group("gpu-spare", 6, "orch")
        assert api.sent("PATCH", path)[1].body == [{"op": "replace", "path": "/spec/workerGroupSpecs/2/replicas",
                                                    "value": 6}]
        with pytest.raises(KubernetesError, match="no worker group 'gpu-h200'"):
            provider.scale_group("gpu-h200", 1, "orch")
        assert provider.provision("gpu-spare", "spare", 2, 8) == ["gpu-spare +2"]  # hot spares: 4 -> 6
        assert api.sent("PATCH", path)[-1].body == [{"op": "replace", "path": "/spec/workerGroupSpecs/2/replicas",
                                                     "value": 6}]


def test_watched_signals_cordon_and_checkpoint_the_jobs_on_the_node(store):
    row = {"id": "job-1", "name": "j", "team": "t", "priority": 0, "spec": {}, "source": {}, "world_size": 16,
           "nodes": 2, "devices_per_node": 8, "total_steps": 10, "state": "running",
           "assignment": ["ip-10-0-1-11", "ip-10-0-2-21"]}
    store.insert_job(row)
    asked = []
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", stream=recorded("watch_nodes.json"), query={"watch": "true"})
        api.on("GET", "/api/v1/events", stream=recorded("watch_events.json"), query={"watch": "true"})
        signals = list(watch_signals(api.api_client(), AWS, timeout_seconds=5))
    assert [(s.node, s.kind) for s in signals] == [("ip-10-0-2-21", "interruption"), ("ip-10-0-2-22", "not_ready"),
                                                   ("ip-10-0-1-11", "rebalance"), ("ip-10-0-2-21", "interruption")]
    respond = InterruptionResponder(store, AWS, lambda job, directive, deadline: asked.append((job["id"], directive,
                                                                                              deadline)))
    for signal in signals:
        respond(signal)
    now = store.clock.now()
    assert asked == [("job-1", "checkpoint_stop", now + 120)]  # once, with AWS's two minutes
    cordons = store.cordoned_nodes()
    assert cordons["ip-10-0-2-21"].startswith(NOTICE_CORDON_PREFIX)
    assert cordons["ip-10-0-1-11"].startswith("rebalance")
    assert store.get_job("job-1")["preempt_requested"]
    kinds = [e["kind"] for e in store.events(limit=100)]
    assert "node.notice" in kinds and "node.lost" in kinds
