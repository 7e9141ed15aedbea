"""Kueue: the RayJob names its team's LocalQueue, the team's ClusterQueue carries the quota orch's
state store has, the flavors are the node groups Terraform creates (labels and taints) and the
Topology's levels are the ones the worker groups' topology annotations name. Shapes per Kueue v0.14
(kueue.x-k8s.io/v1beta1; apis/kueue/v1beta1 clusterqueue_types.go, resourceflavor_types.go;
Topology v1alpha1; pod-set annotations from pkg/controller/constants: podset-slice-required-topology,
podset-slice-size, podset-preferred-topology)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from orchestrator.k8s.kueue import resource_flavors, topology
from orchestrator.k8s.kustomize import build
from orchestrator.k8s.render import K8sSettings, job_manifests
from orchestrator.k8s.validate import problems
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from tests.conftest import ROOT, V3_SPEC
from tests.unit.test_k8s import load_tf
from tests.unit.test_k8s_cluster import EFFECT, tf_locals


def orch(home, *args):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(home)},
        timeout=120,
    )


def test_a_team_quota_becomes_its_queue_and_the_rayjob_uses_it(tmp_path):
    assert orch(tmp_path, "budget", "pretrain", "--quota-devices", "2048").returncode == 0
    out = orch(tmp_path, "k8s", "kueue", "--team", "research=64")
    assert out.returncode == 0, out.stderr
    objects = list(yaml.safe_load_all(out.stdout))
    assert [p for o in objects for p in problems(o)] == []
    queues = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterQueue"}
    assert set(queues) == {"pretrain", "research"}
    flavors = queues["pretrain"]["spec"]["resourceGroups"][0]["flavors"]
    on_demand_flavor = next(f for f in flavors if f["name"] == "on-demand")
    on_demand = {r["name"]: r["nominalQuota"] for r in on_demand_flavor["resources"]}
    assert on_demand["nvidia.com/gpu"] == 2048 and on_demand["vpc.amazonaws.com/efa"] == 256 * 32
    assert all(q["spec"]["cohort"] == "orch" for q in queues.values())
    local = {o["metadata"]["name"]: o for o in objects if o["kind"] == "LocalQueue"}
    spec = load_spec(str(V3_SPEC))
    rayjob = job_manifests(spec, make_plan(spec), "v3", K8sSettings())[1]
    queue = rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    assert local[queue]["spec"]["clusterQueue"] == queue and local[queue]["metadata"]["namespace"] == "orch"


def test_no_quota_is_a_clear_error(tmp_path):
    out = orch(tmp_path, "k8s", "kueue")
    assert out.returncode == 2 and "--quota-devices" in out.stderr and "Traceback" not in out.stderr
    bad = orch(tmp_path, "k8s", "kueue", "--team", "research")
    assert bad.returncode == 2 and "NAME=DEVICES" in bad.stderr


def test_flavors_are_the_node_groups_and_the_topology_is_what_pods_ask_for():
    pools = tf_locals(load_tf())["gpu_pools"]
    flavors = {f["metadata"]["name"]: f["spec"] for f in resource_flavors()}
    for pool in pools.values():
        flavor = flavors[pool["kind"]]
        assert flavor["nodeLabels"]["orch.dev/pool-kind"] == pool["labels"]["orch.dev/pool-kind"]
        tainted = [t for t in pool["taints"] if t["key"] == "orch.dev/pool-kind"]
        assert [(t["key"], t["value"], EFFECT[t["effect"]]) for t in tainted] == [
            (t["key"], t["value"], t["effect"]) for t in flavor.get("nodeTaints", [])
        ]
    levels = [level["nodeLabel"] for level in topology()["spec"]["levels"]]
    spec = load_spec(str(V3_SPEC))
    for group in job_manifests(spec, make_plan(spec), "v3", K8sSettings())[1]["spec"]["rayClusterSpec"][
        "workerGroupSpecs"
    ]:
        for key, value in group["template"]["metadata"]["annotations"].items():
            if key.endswith("-topology"):
                assert value in levels


def test_the_checked_in_kueue_objects_are_the_generated_ones():
    assert build(ROOT / "k8s" / "kueue") == resource_flavors() + [topology()]
    assert [p for o in build(ROOT / "k8s" / "kueue") for p in problems(o)] == []
    assert problems({**topology(), "spec": {"levelz": []}})  # the schema catches a typo
