"""One cluster, one truth: the job spec, the rendered manifests, the Kustomize overlays and
Terraform's node groups agree (pool names, node labels, taints and tolerations, instance types, GPU
and EFA counts, sizes), every pod fits the node it must land on, and what Terraform sets up is what an
SRE would sign (module-level EFA with one placement group, device plugins, KubeRay chart = vendored
CRDs, NTH cordon-only with taints in queue mode, storage, S3, endpoint, EKS version).

Sources: instance shapes from the EC2 instance-type pages (p5.48xlarge: 8 H100 80 GB, 192 vCPU,
2,048 GiB, 32 EFA; m7i.4xlarge: 16 vCPU, 64 GiB) and amazon-eks-ami's eni-max-pods.txt (p5.48xlarge
100, m7i.4xlarge 234); the kubelet reservations from awslabs/amazon-eks-ami nodeadm
(internal/kubelet/config.go: CPU 6% of the first core, 1% of the second, 0.5% of the next two, 0.25%
of the rest; memory 255 MiB + 11 MiB per pod; eviction-hard 100 MiB); terraform-aws-modules/eks
v20.37.2 (node_groups.tf efa_security_group_rules; modules/eks-managed-node-group/main.tf
create_placement_group); NTH v1.25.6 (config/helm/aws-node-termination-handler/values.yaml).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchestrator.k8s.kustomize import build
from orchestrator.k8s.render import K8sSettings, job_manifests
from orchestrator.k8s.submit import standing_workers
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from tests.conftest import ROOT, V3_SPEC
from tests.helpers.kuberay_pod import quantity
from tests.unit.test_k8s import _named, load_tf

K8S = ROOT / "k8s"
INSTANCES = {
    "p5.48xlarge": {"gpus": 8, "gpu_memory_gb": 80, "vcpu": 192, "memory_gib": 2048, "efa": 32, "max_pods": 100},
    "m7i.4xlarge": {"vcpu": 16, "memory_gib": 64, "max_pods": 234},
}
DAEMONS = {"cpu": 1.0, "memory": 2 * 2**30}  # aws-node, kube-proxy, ebs-csi-node, device plugins: headroom
EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def tf_default(tf, name):
    return next(block[name]["default"] for block in tf["variable"] if name in block)


def tf_locals(tf) -> dict:
    return {k: v for block in tf["locals"] for k, v in block.items()}


def ray_clusters() -> dict[str, dict]:
    found = {
        where: next(o for o in build(K8S / where) if o["kind"] == "RayCluster")["spec"]
        for where in ("base", "overlays/dev", "overlays/prod", "overlays/prod-rayjob")
    }
    spec = load_spec(str(V3_SPEC))
    found["v3-rayjob"] = job_manifests(spec, make_plan(spec), "v3", K8sSettings())[1]["spec"]["rayClusterSpec"]
    return found


def test_pools_labels_taints_and_gpus_agree_everywhere():
    tf = load_tf()
    pools = tf_locals(tf)["gpu_pools"]
    instance = INSTANCES[tf_default(tf, "gpu_instance_type")]
    assert tf_default(tf, "efa_interfaces") == instance["efa"]
    spec = load_spec(str(V3_SPEC))
    for pool in spec.resources.pools:  # the job spec's pools are node groups Terraform creates
        assert pool.name in pools, f"V3 pool {pool.name} matches no node group ({sorted(pools)})"
        assert pools[pool.name]["kind"] == pool.kind
        assert pool.nodes <= tf_default(tf, f"gpu_{pool.name.removeprefix('gpu-').replace('-', '_')}_nodes")
    assert spec.resources.gpus_per_node == instance["gpus"]
    assert spec.resources.accelerator.memory_gb == instance["gpu_memory_gb"]
    for where, cluster in ray_clusters().items():
        for group in cluster["workerGroupSpecs"]:
            node = pools[group["groupName"]]
            pod = group["template"]["spec"]
            terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            wanted = {e["key"]: e["values"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]}
            assert all(node["labels"].get(k) in v for k, v in wanted.items()), (where, group["groupName"])
            assert group["template"]["metadata"]["labels"]["orch.dev/pool-kind"] == node["kind"]
            for taint in node["taints"]:  # every taint of the node is tolerated
                assert any(
                    t["key"] == taint["key"]
                    and t["effect"] == EFFECT[taint["effect"]]
                    and (t["operator"] == "Exists" or t.get("value") == taint["value"])
                    for t in pod["tolerations"]
                ), (where, group["groupName"], taint)
            limits = pod["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) == instance["gpus"]
            assert int(limits["vpc.amazonaws.com/efa"]) == instance["efa"]


def test_the_prod_overlay_is_the_terraform_cluster():
    tf = load_tf()
    groups = {g["groupName"]: g for g in ray_clusters()["overlays/prod"]["workerGroupSpecs"]}
    sizes = {"gpu-on-demand": "gpu_on_demand_nodes", "gpu-spot": "gpu_spot_nodes", "gpu-spare": "gpu_spare_nodes"}
    assert set(groups) == set(tf_locals(tf)["gpu_pools"]) == set(sizes)
    for name, variable in sizes.items():
        assert groups[name]["maxReplicas"] <= tf_default(tf, variable) == groups[name]["replicas"]
    outputs = json.dumps({k: v for block in tf["output"] for k, v in block.items()}["gpu_pools"])
    assert all(name in outputs for name in sizes)


def test_a_v3_rayjob_finds_its_nodes_only_where_the_standing_cluster_holds_none():
    """Each pool's Terraform node group less the standing RayCluster's workers in it is what a RayJob
    can get. The V3 RayJob's groups fit under overlays/prod-rayjob and not under overlays/prod, which
    is why `orch submit --target k8s` refuses a namespace with a standing gang (``standing_workers``)."""
    tf = load_tf()
    size = {
        "gpu-on-demand": tf_default(tf, "gpu_on_demand_nodes"),
        "gpu-spot": tf_default(tf, "gpu_spot_nodes"),
        "gpu-spare": tf_default(tf, "gpu_spare_nodes"),
    }
    clusters = ray_clusters()
    wanted = {g["groupName"]: g["replicas"] for g in clusters["v3-rayjob"]["workerGroupSpecs"]}

    def free(where):
        held = {g["groupName"]: g["replicas"] for g in clusters[where]["workerGroupSpecs"]}
        return {pool: size[pool] - held.get(pool, 0) for pool in size}

    assert all(wanted[pool] <= free("overlays/prod-rayjob")[pool] for pool in wanted)
    assert not all(wanted[pool] <= free("overlays/prod")[pool] for pool in wanted)
    spec = {"spec": clusters["overlays/prod"]}
    assert standing_workers(spec) == 256 and standing_workers({"spec": clusters["overlays/prod-rayjob"]}) == 0


def test_node_groups_take_their_labels_and_taints_from_the_pools():
    tf = load_tf()
    eks = {n: b for block in tf["module"] for n, b in block.items()}["eks"]
    managed = json.dumps(eks["eks_managed_node_groups"])
    assert "local.gpu_pools[name].labels" in managed and "local.gpu_pools[name].taints" in managed
    spot = json.dumps(eks["self_managed_node_groups"])
    assert 'local.gpu_pools[\\"gpu-spot\\"].labels' in spot and 'local.gpu_pools[\\"gpu-spot\\"].taints' in spot
    assert "capacity_rebalance = false" in eks["self_managed_node_groups"]["gpu-spot"]  # deliberately off


def allocatable(instance: dict) -> dict[str, float]:
    """The kubelet's allocatable on an EKS AL2023 node (nodeadm's reservations)."""
    cores = instance["vcpu"]
    reserved_m = 60 + (10 if cores > 1 else 0) + 5 * max(0, min(cores, 4) - 2) + 2.5 * max(0, cores - 4)
    memory = instance["memory_gib"] * 2**30 - (255 + 11 * instance["max_pods"]) * 2**20 - 100 * 2**20
    return {"cpu": cores - reserved_m / 1000, "memory": memory}


def requests(pod: dict) -> dict[str, float]:
    total = {"cpu": 0.0, "memory": 0.0}
    for container in pod["containers"]:
        for key in total:
            total[key] += quantity(container.get("resources", {}).get("requests", {}).get(key, "0"))
    return total


def fits(pods: list[dict[str, float]], nodes: int, room: dict[str, float]) -> bool:
    """First-fit decreasing: can the pods be packed onto ``nodes`` nodes of ``room`` each?"""
    free = [dict(room) for _ in range(nodes)]
    for pod in sorted(pods, key=lambda p: (-p["cpu"], -p["memory"])):
        node = next((n for n in free if n["cpu"] >= pod["cpu"] and n["memory"] >= pod["memory"]), None)
        if node is None:
            return False
        for key in node:
            node[key] -= pod[key]
    return True


@pytest.mark.parametrize("where", ["base", "overlays/dev", "overlays/prod", "overlays/prod-rayjob"])
def test_every_pod_fits_its_node(where):
    tf = load_tf()
    gpu_room = {k: v - DAEMONS[k] for k, v in allocatable(INSTANCES[tf_default(tf, "gpu_instance_type")]).items()}
    system_room = {k: v - DAEMONS[k] for k, v in allocatable(INSTANCES[tf_default(tf, "system_instance_type")]).items()}
    objects = build(K8S / where)
    cluster = next(o for o in objects if o["kind"] == "RayCluster")["spec"]
    for group in cluster["workerGroupSpecs"]:
        assert fits([requests(group["template"]["spec"])], 1, gpu_room), group["groupName"]
    system = [requests(cluster["headGroupSpec"]["template"]["spec"])]
    system += [requests(o["spec"]["template"]["spec"]) for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert fits(system, tf_default(tf, "system_nodes"), system_room)


def test_the_old_head_would_not_fit():
    """The checker catches what the issue found: a 32-CPU head on 16-vCPU system nodes."""
    room = allocatable(INSTANCES["m7i.4xlarge"])
    assert not fits([{"cpu": 32.0, "memory": 256 * 2**30}], 3, room)
    assert not fits([{"cpu": 16.0, "memory": 64 * 2**30}], 3, room)


def test_kuberay_chart_and_crds_are_one_version_of_today():
    tf = load_tf()
    crds = ROOT / "orchestrator" / "k8s" / "crds"
    version = (crds / "VERSION").read_text().strip()
    assert tf_default(tf, "kuberay_version") == version
    assert tuple(int(p) for p in version.split(".")) >= (1, 5, 1)  # authOptions: KubeRay >= 1.5.1
    shared = Path("/work/shared/schemas/kuberay")  # the schemas this session vendored from KubeRay v1.7.0
    if shared.is_dir():
        for path in sorted(crds.glob("*.yaml")):
            assert path.read_text() == (shared / path.name).read_text(), path.name


def test_terraform_sets_up_what_the_manifests_need():
    tf = load_tf()
    eks = {n: b for block in tf["module"] for n, b in block.items()}["eks"]
    assert eks["enable_efa_support"] is True  # the all-protocol self rules EFA needs
    text = json.dumps(eks)
    assert '"enable_efa_support": true' not in json.dumps(eks["eks_managed_node_groups"])  # no per-group PGs
    common = tf_locals(tf)["gpu_common"]
    assert "aws_placement_group.gpu.name" in json.dumps(common["placement"])
    assert "RAID0" in tf_locals(tf)["raid0_nodeadm"]["content"]
    assert "capacity-block" in text and "local.capacity_reservation" in json.dumps(common)
    addons = eks["cluster_addons"]
    assert "aws-ebs-csi-driver" in addons and "enableNetworkPolicy" in json.dumps(addons["vpc-cni"])
    assert eks["cluster_endpoint_public_access_cidrs"] == "${var.api_allowed_cidrs}"
    assert tf_default(tf, "api_allowed_cidrs") == []
    assert tuple(int(p) for p in tf_default(tf, "kubernetes_version").split(".")) >= (1, 33)
    resources = _named(tf["resource"])
    storage = resources[("kubernetes_storage_class_v1", "gp3")]
    assert storage["metadata"][0]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert resources[("aws_vpc_endpoint", "s3")]["vpc_endpoint_type"] == "Gateway"
    tls = json.dumps(_named(tf["data"])[("aws_iam_policy_document", "checkpoints_tls_only")])
    assert "aws:SecureTransport" in tls and "Deny" in tls
    nth = resources[("helm_release", "node_termination_handler")]["values"][0]
    for setting in (
        "enableSqsTerminationDraining = true",
        "cordonOnly                   = true",
        "taintNode                    = true",
        "queueURL",
    ):
        assert setting.split("=")[0].strip() in nth
    rules = tf_locals(tf)["nth_events"]
    assert {"spot-interruption", "rebalance", "scheduled-change", "asg-lifecycle", "state-change"} == set(rules)


def _non_root(pod: dict) -> bool:
    context = pod.get("securityContext", {})
    return context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0


@pytest.mark.parametrize("where", ["base", "overlays/prod", "overlays/prod-rayjob"])
def test_every_pod_runs_as_non_root(where):
    objects = build(K8S / where)
    cluster = next(o for o in objects if o["kind"] == "RayCluster")["spec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    pods += [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert all(_non_root(p) for p in pods)
    assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for p in pods for c in p["containers"])


def blocks_drains(pdb: dict, replicas: int) -> bool:
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        return int(spec["maxUnavailable"]) < 1
    return replicas - int(spec.get("minAvailable", 0)) < 1


def test_no_disruption_budget_blocks_a_drain():
    objects = build(K8S / "overlays/prod")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        replicas = sum(
            w["spec"].get("replicas", 1)
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        )
        assert not blocks_drains(pdb, replicas), pdb["metadata"]["name"]
    old = {"spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}}
    assert blocks_drains(old, 1)  # what the base had: one replica, minAvailable 1


def test_ray_pods_take_the_image_variable_and_the_efa_devices():
    for where, cluster in ray_clusters().items():
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            assert group["template"]["spec"]["containers"][0]["image"] == "orch", where
    assert math.isclose(quantity("1800Gi"), 1800 * 2**30)
