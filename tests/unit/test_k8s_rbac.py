"""RBAC that matches the code: replay the API traffic of the controller's node-provider, notice and
RayJob-following tests, the Ray init container and `orch submit --target k8s`, each under the identity of the pod (or
group) that makes those calls in the cluster, and check every request against the Roles and
ClusterRoles bound to that identity in the Kustomize base, the way the API server's RBAC authorizer
decides (kubernetes/kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go: a rule allows a request when
its apiGroups, resources (with subresource as "resource/sub") and verbs contain the request's; a
RoleBinding's rules apply in its namespace, a ClusterRoleBinding's everywhere). Every rule granted
must be used by some request: nothing else is granted."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from orchestrator.clock import ManualClock
from orchestrator.k8s.kustomize import build
from orchestrator.k8s.node_labels import main as node_labels_main
from orchestrator.state.store import StateStore
from tests.conftest import ROOT
from tests.helpers.k8s_replay import ReplayServer
from tests.unit import test_k8s
from tests.unit import test_k8s_ledger as ledger_tests
from tests.unit import test_kubernetes_provider as provider_tests

CONTROLLER, RAY, SUBMITTERS = (
    "system:serviceaccount:orch:orch-controller",
    "system:serviceaccount:orch:orch-ray",
    "group:orch:submitters",
)
PATH = re.compile(
    r"/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/[^/]+)"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?"
)


@dataclass(frozen=True)
class Attributes:
    group: str
    resource: str  # "pods/eviction" for a subresource
    verb: str
    namespace: str  # "" at cluster scope


def attributes(method: str, path: str, query: dict) -> Attributes:
    m = PATH.fullmatch(path)
    assert m, f"not a Kubernetes API path: {path}"
    resource = m["resource"] + (f"/{m['sub']}" if m["sub"] else "")
    if method == "GET":
        verb = "get" if m["name"] else ("watch" if query.get("watch") == ["true"] else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
    return Attributes("" if m["core"] else m["group"], resource, verb, m["ns"] or "")


def bound_rules(objects: list[dict], who: str) -> list[tuple[dict, str]]:
    """(rule, namespace or '' for everywhere) of every role bound to ``who``."""
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    found = []
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = {
            f"system:serviceaccount:{s['namespace']}:{s['name']}"
            if s["kind"] == "ServiceAccount"
            else f"group:{s['name']}"
            for s in binding["subjects"]
        }
        if who not in subjects:
            continue
        scope = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else "", ref["name"])]
        found += [(rule, scope) for rule in role["rules"]]
    return found


def allows(rule: dict, scope: str, request: Attributes) -> bool:
    return (
        request.group in rule["apiGroups"]
        and request.resource in rule["resources"]
        and request.verb in rule["verbs"]
        and (scope == "" or scope == request.namespace)
    )


def grants(rule: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> dict[str, list[Attributes]]:
    """Run the flows of the other tests as their callers and collect what they sent."""
    ReplayServer.traffic.clear()
    tmp = tmp_path_factory.mktemp("rbac")

    def store(name):
        return StateStore(f"sqlite:///{tmp / name}.db", clock=ManualClock(1_800_000_000.0))

    ReplayServer.caller = CONTROLLER
    provider_tests.test_nodes_cordon_and_errors_over_http(store("a"))
    provider_tests.test_drain_evicts_the_ray_pods_with_their_grace_period(store("b"))
    provider_tests.test_replace_and_scale_patch_the_raycluster(store("c"))
    provider_tests.test_both_watches_are_open_at_once_and_resume_from_their_resource_version()
    provider_tests.test_an_nth_taint_checkpoints_then_cordons_drains_and_replaces_the_worker(store("d"))
    ledger_tests.test_the_controller_follows_a_detached_rayjob_into_the_ledger(store("e"))
    ReplayServer.caller = RAY
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes/ip-10-0-1-11", body=provider_tests.recorded("nodes.json")["items"][0])
        node_labels_main(
            [
                "--node",
                "ip-10-0-1-11",
                "--pool",
                "gpu-on-demand",
                "--kind",
                "on-demand",
                "--out",
                str(tmp / "labels.yaml"),
            ],
            api_client=api.api_client(),
        )
    ReplayServer.caller = SUBMITTERS
    (tmp / "submit").mkdir()
    test_k8s.test_submit_creates_the_objects_and_follows_the_rayjob(tmp / "submit")
    ReplayServer.caller = ""
    by_caller: dict[str, list[Attributes]] = {}
    for request in ReplayServer.traffic:
        by_caller.setdefault(request.caller, []).append(attributes(request.method, request.path, request.query))
    return by_caller


@pytest.mark.parametrize("who", [CONTROLLER, RAY, SUBMITTERS])
def test_every_call_is_allowed_and_every_grant_is_used(traffic, who):
    rules = bound_rules(build(ROOT / "k8s" / "base"), who)
    calls = traffic[who]
    refused = [c for c in calls if not any(allows(rule, scope, c) for rule, scope in rules)]
    assert refused == [], f"{who} would get 403 for {refused}"
    used = {(c.group, c.resource, c.verb) for c in calls}
    unused = {g for rule, _ in rules for g in grants(rule)} - used
    assert unused == set(), f"{who} is granted what it never calls: {sorted(unused)}"


def test_the_dashboard_has_no_api_access_and_no_token():
    objects = build(ROOT / "k8s" / "base")
    assert bound_rules(objects, "system:serviceaccount:orch:orch-dashboard") == []
    dashboard = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orch-dashboard")
    pod = dashboard["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "orch-dashboard" and pod["automountServiceAccountToken"] is False
    controller = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orch-controller")
    assert [c["name"] for c in controller["spec"]["template"]["spec"]["containers"]] == ["controller"]
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == "orch-controller"


def test_the_checker_refuses_what_rbac_refuses():
    """The old drain listed pods in all namespaces with a namespaced Role: a 403 in the cluster."""
    rules = bound_rules(build(ROOT / "k8s" / "base"), CONTROLLER)
    assert not any(allows(r, s, attributes("GET", "/api/v1/pods", {})) for r, s in rules)
    assert any(allows(r, s, attributes("GET", "/api/v1/namespaces/orch/pods", {})) for r, s in rules)
    assert not any(allows(r, s, attributes("GET", "/api/v1/namespaces/default/pods", {})) for r, s in rules)
