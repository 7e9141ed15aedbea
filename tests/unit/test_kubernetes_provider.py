"""The Kubernetes node provider against a local server replaying the API's responses and watch
streams (tests/k8s_responses/, in the API's own format), and on the client's own model objects.

The notice path follows the AWS Node Termination Handler v1.25.6 in queue mode with ``taintNode`` and
``cordonOnly`` (pkg/node/node.go: the ``aws-node-termination-handler/spot-itn`` taint; it cordons and
leaves the pods to orch) and KubeRay v1.7.0's ``scaleStrategy.workersToDelete``
(ray-operator/controllers/ray/raycluster_controller.go deletes the named pods and creates
replacements to keep ``replicas``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from orchestrator.clock import ManualClock
from orchestrator.cluster.k8s_watch import SignalWatch, watch_signals
from orchestrator.cluster.kubernetes import (
    KubernetesError,
    KubernetesNodeProvider,
    node_view,
    signal_from_event,
    signals_from_node,
)
from orchestrator.cluster.notices import NOTICE_CORDON_PREFIX, notice_windows
from orchestrator.control.k8s_notices import NoticeResponder
from orchestrator.control.notices import InterruptionResponder
from orchestrator.lifecycle import JobState
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
    assert AWS.notice_seconds == 120 and GCP.notice_seconds == 15  # GKE: 15 s for non-system pods
    taints = {s.taint for s in AWS.signals if s.taint}
    reasons = {s.event_reason for s in AWS.signals if s.event_reason}
    # every one named in NTH v1.25.6 pkg/node/node.go and pkg/observability/k8s-events.go
    assert taints == {
        "aws-node-termination-handler/spot-itn",
        "aws-node-termination-handler/asg-lifecycle-termination",
        "aws-node-termination-handler/rebalance-recommendation",
        "aws-node-termination-handler/scheduled-maintenance",
    }
    assert reasons == {"SpotInterruption", "ASGLifecycle", "RebalanceRecommendation", "ScheduledEvent"}
    assert GCP.signals == () and notice_windows()["azure"].signals == ()  # no upstream source: none


def test_signals_from_the_clients_model_objects():
    spot = client.V1Node(
        metadata=client.V1ObjectMeta(name="n1", labels={"orch.dev/pool": "spot", "orch.dev/pool-kind": "spot"}),
        spec=client.V1NodeSpec(
            taints=[client.V1Taint(key="aws-node-termination-handler/spot-itn", effect="NoSchedule")]
        ),
        status=client.V1NodeStatus(
            allocatable={"nvidia.com/gpu": "8"}, conditions=[client.V1NodeCondition(type="Ready", status="True")]
        ),
    )
    assert signals_from_node(spot, AWS) == [signals_from_node(spot, AWS)[0]]
    assert signals_from_node(spot, AWS)[0].kind == "interruption"
    assert signals_from_node(spot, GCP) == []  # GKE does not use the AWS handler's taint
    lost = client.V1Node(
        metadata=client.V1ObjectMeta(name="n2"),
        status=client.V1NodeStatus(conditions=[client.V1NodeCondition(type="Ready", status="Unknown")]),
    )
    assert [s.kind for s in signals_from_node(lost, AWS)] == ["not_ready"]
    view = node_view(spot, {})
    assert view.devices == 8 and view.alive and view.pool_kind == "spot" and not view.cordoned
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="e"),
        involved_object=client.V1ObjectReference(kind="Node", name="n1"),
        reason="SpotInterruption",
    )
    assert signal_from_event(event, AWS).kind == "interruption"


EMPTY_NODES = {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1050"}, "items": []}
OLD_EVENTS = {
    "kind": "EventList",
    "apiVersion": "v1",
    "metadata": {"resourceVersion": "2000"},
    "items": [
        {
            "metadata": {"name": "old", "namespace": "default", "resourceVersion": "1999"},
            "reason": "SpotInterruption",
            "involvedObject": {"kind": "Node", "name": "ip-10-0-9-99"},
        }
    ],
}


def test_nodes_cordon_and_errors_over_http(store):
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", body=recorded("nodes.json"), times=1)
        api.on(
            "GET",
            "/api/v1/nodes",
            status=403,
            body=status_body(
                403,
                "Forbidden",
                "nodes is forbidden: User "
                '"system:serviceaccount:orch:orch" cannot list resource "nodes" in API group "" at the cluster scope',
            ),
        )
        api.on("PATCH", "/api/v1/nodes/ip-10-0-1-11", body=recorded("nodes.json")["items"][0])
        provider = KubernetesNodeProvider(api.api_client(), store)
        views = {v.name: v for v in provider.nodes()}
        assert sent_query(api, "GET", "/api/v1/nodes")["labelSelector"] == ["orch.dev/pool"]
        assert views["ip-10-0-1-11"].devices == 8 and views["ip-10-0-1-11"].alive
        assert not views["ip-10-0-2-22"].alive  # Ready=Unknown
        assert views["ip-10-0-3-31"].cordoned and views["ip-10-0-3-31"].pool_kind == "spare"
        assert views["ip-10-0-2-21"].topology == "nn-spine1/nn-spine1-b/nn-leaf-b"
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
        api.on("GET", "/api/v1/namespaces/orch/pods", body=recorded("pods_on_node.json"))
        api.on(
            "POST",
            "/api/v1/namespaces/orch/pods/orch-gpu-spot-worker-7xk2p/eviction",
            status=201,
            body=recorded("eviction_created.json"),
            times=1,
        )
        api.on(
            "POST",
            "/api/v1/namespaces/orch/pods/orch-gpu-spot-worker-7xk2p/eviction",
            status=429,
            body=status_body(
                429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."
            ),
        )
        provider = KubernetesNodeProvider(api.api_client(), store)
        assert provider.drain("ip-10-0-2-21", "kernel update", "user:ops", grace_seconds=90) == [
            "orch/orch-gpu-spot-worker-7xk2p"
        ]
        query = sent_query(api, "GET", "/api/v1/namespaces/orch/pods")
        assert query["fieldSelector"] == ["spec.nodeName=ip-10-0-2-21"]
        assert api.sent("GET", "/api/v1/namespaces/orch/pods")  # namespaced: the controller's Role is
        eviction = api.sent("POST", "/api/v1/namespaces/orch/pods/.*/eviction")[0].body
        assert eviction["deleteOptions"]["gracePeriodSeconds"] == 90 and eviction["metadata"]["namespace"] == "orch"
        assert store.cordoned_nodes()["ip-10-0-2-21"] == "drain: kernel update"
        with pytest.raises(KubernetesError, match="429 Cannot evict.*PodDisruptionBudget"):
            provider.drain("ip-10-0-2-21", "again", "user:ops")


RAY_CLUSTER = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "orch", "namespace": "orch"},
    "spec": {
        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": []}}},
        "workerGroupSpecs": [
            {"groupName": "gpu-on-demand", "replicas": 128},
            {"groupName": "gpu-spot", "replicas": 128},
            {"groupName": "gpu-spare", "replicas": 4},
        ],
    },
}


def test_replace_and_scale_patch_the_raycluster(store):
    path = "/apis/ray.io/v1/namespaces/orch/rayclusters/orch"
    with ReplayServer() as api:
        api.on("GET", path, body=RAY_CLUSTER)
        api.on("PATCH", path, body=RAY_CLUSTER)
        provider = KubernetesNodeProvider(api.api_client(), store)
        provider.replace_worker("gpu-spot", "orch-gpu-spot-worker-7xk2p", "orch")
        patch = api.sent("PATCH", path)[0]
        assert patch.headers["content-type"] == "application/json-patch+json"
        assert patch.body == [
            {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 128},
            {
                "op": "add",
                "path": "/spec/workerGroupSpecs/1/scaleStrategy",
                "value": {"workersToDelete": ["orch-gpu-spot-worker-7xk2p"]},
            },
        ]
        provider.scale_group("gpu-spare", 6, "orch")
        assert api.sent("PATCH", path)[1].body == [
            {"op": "replace", "path": "/spec/workerGroupSpecs/2/replicas", "value": 6}
        ]
        with pytest.raises(KubernetesError, match="no worker group 'gpu-h200'"):
            provider.scale_group("gpu-h200", 1, "orch")
        assert provider.provision("gpu-spare", "spare", 2, 8) == ["gpu-spare +2"]  # hot spares: 4 -> 6
        assert api.sent("PATCH", path)[-1].body == [
            {"op": "replace", "path": "/spec/workerGroupSpecs/2/replicas", "value": 6}
        ]


def apply_json_patch(obj: dict, patch: list[dict]) -> dict:
    """The ``add``/``replace`` operations of RFC 6902 on a copy of ``obj`` (what the API server does)."""
    import copy

    out = copy.deepcopy(obj)
    for op in patch:
        *parents, last = [int(p) if p.isdigit() else p for p in op["path"].strip("/").split("/")]
        target = out
        for part in parents:
            target = target[part]
        assert op["op"] in ("add", "replace") and (op["op"] == "add" or last in target)
        target[last] = op["value"]
    return out


def kuberay_reconcile_group(group: dict, pods: list[str], autoscaling: bool) -> tuple[list[str], int]:
    """KubeRay's reconcilePods for one worker group (ray-project/kuberay, commit 0055bf305df9,
    ray-operator/controllers/ray/raycluster_controller.go): the pods named in
    ``scaleStrategy.workersToDelete`` are deleted whatever ``replicas`` says; then, if fewer pods are
    wanted than remain, ``-diff`` pods are deleted at random (``runningPods.Items[i]``) unless in-tree
    autoscaling is on, and if more are wanted, new ones are created. Returns (the pods deleted, how
    many were created)."""
    named = [p for p in (group.get("scaleStrategy") or {}).get("workersToDelete", []) if p in pods]
    running = [p for p in pods if p not in named]
    diff = group["replicas"] - len(running)
    randomly = running[:-diff] if diff < 0 and not autoscaling else []
    return named + randomly, max(diff, 0)


def test_retiring_a_node_scales_its_group_down_by_its_own_pod(store):
    """As the Ray autoscaler does on KubeRay (Ray 2.60.0 ray/autoscaler/_private/kuberay/node_provider.py:
    ``worker_replica_patch`` and ``worker_delete_patch`` in one request): one replica fewer and the pod
    on the retired node named in ``workersToDelete``, so KubeRay removes that pod and no other."""
    path = "/apis/ray.io/v1/namespaces/orch/rayclusters/orch"
    spare_pods = [
        "orch-gpu-spare-worker-aaaaa",
        "orch-gpu-spare-worker-bbbbb",
        "orch-gpu-spare-worker-ccccc",
        "orch-gpu-spare-worker-ddddd",
        "orch-gpu-spare-worker-eeeee",
    ]
    on_node = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": [
            {
                "metadata": {
                    "name": "orch-gpu-spare-worker-ddddd",
                    "namespace": "orch",
                    "labels": {"ray.io/group": "gpu-spare", "ray.io/node-type": "worker"},
                },
                "spec": {"nodeName": "ip-10-0-3-35", "containers": []},
            }
        ],
    }
    grown = apply_json_patch(
        RAY_CLUSTER, [{"op": "replace", "path": "/spec/workerGroupSpecs/2/replicas", "value": 5}]
    )  # orch added a fifth spare earlier
    with ReplayServer() as api:
        api.on("GET", "/api/v1/namespaces/orch/pods", body=on_node, times=1)
        api.on("GET", "/api/v1/namespaces/orch/pods", body={**on_node, "items": []})
        api.on("GET", path, body=grown)
        api.on("PATCH", path, body=grown)
        provider = KubernetesNodeProvider(api.api_client(), store)
        assert provider.retire("ip-10-0-3-35", "surplus hot spare")
        query = sent_query(api, "GET", "/api/v1/namespaces/orch/pods")
        assert query["fieldSelector"] == ["spec.nodeName=ip-10-0-3-35"]
        assert query["labelSelector"] == ["ray.io/node-type=worker"]
        patch = api.sent("PATCH", path)[0].body
        assert patch == [
            {"op": "replace", "path": "/spec/workerGroupSpecs/2/replicas", "value": 4},
            {
                "op": "add",
                "path": "/spec/workerGroupSpecs/2/scaleStrategy",
                "value": {"workersToDelete": ["orch-gpu-spare-worker-ddddd"]},
            },
        ]
        group = apply_json_patch(grown, patch)["spec"]["workerGroupSpecs"][2]
        for autoscaling in (False, True):
            assert kuberay_reconcile_group(group, spare_pods, autoscaling) == (["orch-gpu-spare-worker-ddddd"], 0)
        # the count alone would have KubeRay delete a pod of its choosing (or, autoscaling on, none)
        count_only = {**group, "scaleStrategy": {}}
        assert kuberay_reconcile_group(count_only, spare_pods, False) == (["orch-gpu-spare-worker-aaaaa"], 0)
        assert kuberay_reconcile_group(count_only, spare_pods, True) == ([], 0)
        assert provider.retire("ip-10-0-3-35", "again")  # its pod is gone: nothing more to do
        assert len(api.sent("PATCH", path)) == 1


def test_watched_signals_cordon_and_checkpoint_the_jobs_on_the_node(store):
    row = {
        "id": "job-1",
        "name": "j",
        "team": "t",
        "priority": 0,
        "spec": {},
        "source": {},
        "world_size": 16,
        "nodes": 2,
        "devices_per_node": 8,
        "total_steps": 10,
        "state": "running",
        "assignment": ["ip-10-0-1-11", "ip-10-0-2-21"],
    }
    store.insert_job(row)
    asked = []
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", stream=recorded("watch_nodes.json"), query={"watch": "true"})
        api.on("GET", "/api/v1/events", stream=recorded("watch_events.json"), query={"watch": "true"})
        api.on("GET", "/api/v1/nodes", body=EMPTY_NODES)
        api.on("GET", "/api/v1/events", body=OLD_EVENTS)
        signals = list(watch_signals(api.api_client(), AWS, timeout_seconds=5))
    signals.sort(key=lambda s: s.source not in [t.taint for t in AWS.signals] + ["Ready=Unknown"])  # nodes first
    assert sorted((s.node, s.kind) for s in signals) == sorted(
        [
            ("ip-10-0-2-21", "interruption"),
            ("ip-10-0-2-22", "not_ready"),
            ("ip-10-0-1-11", "rebalance"),
            ("ip-10-0-2-21", "interruption"),
        ]
    )
    respond = InterruptionResponder(
        store, AWS, lambda job, directive, deadline: asked.append((job["id"], directive, deadline))
    )
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


def test_both_watches_are_open_at_once_and_resume_from_their_resource_version():
    """The event watch delivers while the node watch is still open (no blind window inside a notice);
    each watch starts from its list's resourceVersion, the next one from the last version seen; old
    events are not replayed."""
    tainted = recorded("watch_nodes.json")[0]
    notice = recorded("watch_events.json")[1]
    seen_open = []
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", stream=[tainted], query={"watch": "true"}, hold_s=1.5, times=1)
        api.on("GET", "/api/v1/nodes", stream=[], query={"watch": "true"})
        api.on("GET", "/api/v1/events", stream=[notice], query={"watch": "true"}, times=1)
        api.on("GET", "/api/v1/events", stream=[], query={"watch": "true"})
        api.on("GET", "/api/v1/nodes", body=EMPTY_NODES)
        api.on("GET", "/api/v1/events", body=OLD_EVENTS)
        watch = SignalWatch(api.api_client(), AWS, timeout_seconds=5, passes=2).start()
        signals = []
        for signal in watch.signals():
            signals.append(signal)
            if signal.source == "SpotInterruption":
                seen_open.append(api.open_streams.get("/api/v1/nodes", 0))
        node_watches = [r.query for r in api.sent("GET", "/api/v1/nodes") if r.query.get("watch") == ["true"]]
        event_watches = [r.query for r in api.sent("GET", "/api/v1/events") if r.query.get("watch") == ["true"]]
    assert seen_open == [1]  # the node watch was open when the event's signal arrived
    assert ("ip-10-0-9-99", "interruption") not in [(s.node, s.kind) for s in signals]  # an old event: history
    tainted_version, notice_version = (
        tainted["object"]["metadata"]["resourceVersion"],
        notice["object"]["metadata"]["resourceVersion"],
    )
    assert [q["resourceVersion"] for q in node_watches] == [["1050"], [tainted_version]]
    assert [q["resourceVersion"] for q in event_watches] == [["2000"], [notice_version]]
    assert all(q["allowWatchBookmarks"] == ["true"] for q in node_watches + event_watches)


def test_a_410_gone_relists_instead_of_replaying():
    with ReplayServer() as api:
        api.on(
            "GET",
            "/api/v1/nodes",
            stream=[{"type": "ERROR", "object": status_body(410, "Expired", "too old resource version: 1050 (3000)")}],
            query={"watch": "true"},
            times=1,
        )
        api.on("GET", "/api/v1/nodes", stream=[], query={"watch": "true"})
        api.on("GET", "/api/v1/events", stream=[], query={"watch": "true"})
        api.on("GET", "/api/v1/nodes", body=EMPTY_NODES)
        api.on("GET", "/api/v1/events", body=OLD_EVENTS)
        list(SignalWatch(api.api_client(), AWS, timeout_seconds=5, passes=2).run_once())
        lists = [r for r in api.sent("GET", "/api/v1/nodes") if "watch" not in r.query]
    assert len(lists) == 2  # listed again after the 410


RC_PATH = "/apis/ray.io/v1/namespaces/orch/rayclusters/orch"
REPLACEMENT = {
    "kind": "PodList",
    "apiVersion": "v1",
    "metadata": {"resourceVersion": "3100"},
    "items": [
        {
            "metadata": {
                "name": "orch-gpu-spot-worker-q9z4d",
                "namespace": "orch",
                "labels": {"ray.io/group": "gpu-spot", "ray.io/node-type": "worker"},
            },
            "spec": {"containers": [{"name": "ray-worker", "image": "orch"}]},
            "status": {"phase": "Pending"},
        }
    ],
}


def test_an_nth_taint_checkpoints_then_cordons_drains_and_replaces_the_worker(store):
    """NTH (cordon-only, taints) marks ip-10-0-2-21 -> orch asks the job for an emergency checkpoint,
    cordons, waits for the attempt to stop, evicts the Ray pod, asks KubeRay to replace it
    (workersToDelete) and sees the replacement worker coming."""
    store.insert_job(
        {
            "id": "job-1",
            "name": "j",
            "team": "t",
            "priority": 0,
            "spec": {},
            "source": {},
            "world_size": 16,
            "nodes": 2,
            "devices_per_node": 8,
            "total_steps": 10,
            "state": "running",
            "assignment": ["ip-10-0-1-11", "ip-10-0-2-21"],
        }
    )
    tainted = recorded("watch_nodes.json")[0]
    order = []

    def ask_runner(job, directive, deadline):
        order.append(("ask", directive, deadline - store.clock.now(), len(api.requests)))

    def sleep(seconds):  # the runner commits its checkpoint and stops after a few polls
        store.clock.advance(seconds)
        if store.clock.now() - start >= 30:
            if store.job_state("job-1") == JobState.RUNNING:  # the controller restarts it elsewhere
                store.transition("job-1", JobState.RUNNING, JobState.RECOVERING, "node lost")

    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", stream=[tainted], query={"watch": "true"})
        api.on("GET", "/api/v1/events", stream=[], query={"watch": "true"})
        api.on("GET", "/api/v1/nodes", body=EMPTY_NODES)
        api.on("GET", "/api/v1/events", body=OLD_EVENTS)
        api.on("PATCH", "/api/v1/nodes/ip-10-0-2-21", body=tainted["object"])
        api.on(
            "GET",
            "/api/v1/namespaces/orch/pods",
            body=recorded("pods_on_node.json"),
            query={"fieldSelector": "spec.nodeName=ip-10-0-2-21"},
        )
        api.on(
            "GET", "/api/v1/namespaces/orch/pods", body=REPLACEMENT, query={"labelSelector": "ray.io/node-type=worker"}
        )
        api.on(
            "POST",
            "/api/v1/namespaces/orch/pods/orch-gpu-spot-worker-7xk2p/eviction",
            status=201,
            body=recorded("eviction_created.json"),
        )
        api.on("GET", RC_PATH, body=RAY_CLUSTER)
        api.on("PATCH", RC_PATH, body=RAY_CLUSTER)
        provider = KubernetesNodeProvider(api.api_client(), store)
        respond = NoticeResponder(provider, AWS, ask_runner, sleep=sleep, poll_s=5.0)
        start = store.clock.now()
        lines = [
            line
            for signal in SignalWatch(api.api_client(), AWS, timeout_seconds=5, passes=1).run_once()
            for line in respond(signal)
        ]
        calls = [
            (r.method, r.path)
            for r in api.requests
            if "watch" not in r.query and r.path != "/api/v1/events" and r.path != "/api/v1/nodes"
        ]
        evicted_at = store.clock.now()
        coming = provider.coming()
    assert order == [("ask", "checkpoint_stop", 120.0, order[0][3])]  # the emergency checkpoint, first
    assert calls == [
        ("PATCH", "/api/v1/nodes/ip-10-0-2-21"),
        ("GET", "/api/v1/namespaces/orch/pods"),
        ("POST", "/api/v1/namespaces/orch/pods/orch-gpu-spot-worker-7xk2p/eviction"),
        ("GET", RC_PATH),
        ("GET", RC_PATH),
        ("PATCH", RC_PATH),
    ]
    assert evicted_at - start == 30  # evicted once the attempt had stopped, not at the notice
    eviction = api.sent("POST", ".*/eviction")[0].body
    assert eviction["deleteOptions"]["gracePeriodSeconds"] == 90  # what is left of the two minutes
    patch = api.sent("PATCH", RC_PATH)[0].body
    assert {
        "op": "add",
        "path": "/spec/workerGroupSpecs/1/scaleStrategy",
        "value": {"workersToDelete": ["orch-gpu-spot-worker-7xk2p"]},
    } in patch
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/1/replicas", "value": 128} in patch  # count kept
    assert coming == {"gpu-spot": 1}  # the replacement worker is on its way
    assert store.cordoned_nodes()["ip-10-0-2-21"].startswith(NOTICE_CORDON_PREFIX)  # the controller's marker kept
    assert any("replacement requested" in line for line in lines)


def test_a_checkpoint_that_does_not_finish_is_cut_off_before_the_node_goes(store):
    store.insert_job(
        {
            "id": "job-1",
            "name": "j",
            "team": "t",
            "priority": 0,
            "spec": {},
            "source": {},
            "world_size": 16,
            "nodes": 2,
            "devices_per_node": 8,
            "total_steps": 10,
            "state": "running",
            "assignment": ["ip-10-0-2-21"],
        }
    )
    tainted = recorded("watch_nodes.json")[0]
    with ReplayServer() as api:
        api.on("PATCH", "/api/v1/nodes/ip-10-0-2-21", body=tainted["object"])
        api.on("GET", "/api/v1/namespaces/orch/pods", body={"kind": "PodList", "metadata": {}, "items": []})
        provider = KubernetesNodeProvider(api.api_client(), store)
        respond = NoticeResponder(provider, AWS, lambda *a: None, sleep=store.clock.advance, poll_s=5.0)
        start = store.clock.now()
        respond(signals_from_node(tainted["object"], AWS)[0])
    assert store.clock.now() - start == 105  # 120 s notice less the 15 s drain margin
