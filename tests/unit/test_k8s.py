"""Kubernetes manifests and Terraform: everything that can be checked without an API server or cloud.

Every manifest (the Kustomize base, both overlays, rendered jobs) validates against the Kubernetes
API's schemas (strict) and KubeRay's CRD schemas; the V3 RayJob is compared with a golden snapshot
(refresh on purpose: ORCH_UPDATE_GOLDEN=1); `orch submit --target k8s` runs against a server that
answers like the API server; the Terraform files parse and declare what the EKS deployment needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

from orchestrator.k8s.kustomize import build
from orchestrator.k8s.render import K8sSettings, job_manifests
from orchestrator.k8s.submit import STANDING_CLUSTER
from orchestrator.k8s.validate import problems
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from tests.conftest import ROOT, V3_SPEC
from tests.helpers.k8s_replay import ReplayServer, status_body

K8S, TERRAFORM, GOLDEN = ROOT / "k8s", ROOT / "terraform", ROOT / "tests" / "golden"
OVERLAYS = ["base", "overlays/dev", "overlays/prod", "overlays/prod-rayjob"]


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("where", OVERLAYS)
def test_every_manifest_validates(where):
    objects = build(K8S / where)
    found = [p for o in objects for p in problems(o)]
    assert found == []
    kinds = {o["kind"] for o in objects}
    assert {
        "RayCluster",
        "Deployment",
        "StatefulSet",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "PriorityClass",
        "NetworkPolicy",
        "ServiceMonitor",
        "ConfigMap",
    } <= kinds
    assert "Secret" not in kinds  # created outside Git (docs/kubernetes.md, "Secrets")


def test_the_validator_catches_mistakes():
    deployment = by_kind(build(K8S / "base"), "Deployment")[0]
    deployment["spec"]["replica"] = 2  # a typo: strict schemas reject unknown fields
    assert any("replica" in p for p in problems(deployment))
    cluster = by_kind(build(K8S / "base"), "RayCluster")[0]
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = "many"
    assert any("replicas" in p for p in problems(cluster))


def test_overlays_size_the_cluster():
    prod = by_kind(build(K8S / "overlays/prod"), "RayCluster")[0]["spec"]["workerGroupSpecs"]
    groups = {g["groupName"]: g for g in prod}
    replicas = (groups["gpu-on-demand"]["replicas"], groups["gpu-spot"]["replicas"], groups["gpu-spare"]["replicas"])
    assert replicas == (256, 0, 4)
    gpus = sum(
        g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        for name, g in groups.items()
        if name != "gpu-spare"
    )
    assert gpus == 2048
    rayjob_groups = by_kind(build(K8S / "overlays/prod-rayjob"), "RayCluster")[0]["spec"]["workerGroupSpecs"]
    assert {(g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in rayjob_groups} == {(0, 0, 0)}
    dev_groups = by_kind(build(K8S / "overlays/dev"), "RayCluster")[0]["spec"]["workerGroupSpecs"]
    dev = {g["groupName"]: g["replicas"] for g in dev_groups}
    assert dev == {"gpu-on-demand": 1, "gpu-spot": 0, "gpu-spare": 1}
    for where in OVERLAYS:  # orch's image is the Kustomize name `orch` (set per cluster), others are pinned
        images = {c["image"] for o in build(K8S / where) for c in _containers(o)}
        assert images == {"orch", "postgres:16", "redis:7.4"}


def _containers(obj):
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(obj)
    return found


def test_base_raycluster_is_the_renderer_output():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "k8s",
            "render",
            str(K8S / "cluster-spec.yaml"),
            "--kind",
            "raycluster",
            "--name",
            "orch",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == yaml.safe_load((K8S / "base" / "raycluster.yaml").read_text())


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not installed: the Python kustomize subset is checked against it only where it is",
)
@pytest.mark.parametrize("where", [*OVERLAYS, "kueue"])
def test_the_kustomize_subset_agrees_with_kubectl(where):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / where)], capture_output=True, text=True, check=True)
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
    mine = {(o["kind"], o["metadata"]["name"]): o for o in build(K8S / where)}
    assert mine == theirs


def test_cluster_pieces_are_wired():
    objects = build(K8S / "base")
    cluster = by_kind(objects, "RayCluster")[0]["spec"]
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"].startswith("orch-redis.")
    worker = cluster["workerGroupSpecs"][1]["template"]["spec"]
    spot = {"key": "orch.dev/pool-kind", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
    assert spot in worker["tolerations"]
    terms = worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0] == {"key": "orch.dev/pool", "operator": "In", "values": ["gpu-spot"]}
    shm = next(v for v in worker["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    limits = worker["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8" and limits["vpc.amazonaws.com/efa"] == "32"
    # KubeRay v1.7.0 gives the token to every Ray container and the RayJob submitter from authOptions
    # (pod.go SetContainerTokenAuthEnvVars: RAY_AUTH_TOKEN from the Secret's key "auth_token")
    assert cluster["authOptions"] == {"mode": "token", "secretName": "orch-ray-auth"}
    assert not any(e["name"] == "RAY_AUTH_TOKEN" for e in worker["containers"][0]["env"])
    for deployment in by_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] == "RAY_AUTH_TOKEN":
                    assert env["valueFrom"]["secretKeyRef"] == {"name": "orch-ray-auth", "key": "auth_token"}
    grafana = next(c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "orch-grafana-dashboard")
    dashboard = json.loads(grafana["data"]["grafana-dashboard.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("orch_gpu_hours", "orch_cost_usd", "orch_goodput_ratio", "orch_reference_cost_usd"):
        assert metric in exprs  # the metrics `orch metrics` exports


def test_v3_rayjob_matches_the_golden_snapshot():
    spec = load_spec(str(V3_SPEC))
    objects = job_manifests(spec, make_plan(spec), "deepseek-v3-pretrain-0001", K8sSettings())
    assert [p for o in objects for p in problems(o)] == []
    rayjob = objects[1]
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [(g["groupName"], g["replicas"]) for g in groups] == [("gpu-on-demand", 256)]
    spec = rayjob["spec"]
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "pretrain"
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec  # exclusive with rules
    assert {r["policy"] for r in spec["deletionStrategy"]["deletionRules"]} == {"DeleteWorkers", "DeleteCluster"}
    assert spec["backoffLimit"] <= 2 and spec["activeDeadlineSeconds"] > 86400 * 50  # V3: ~2 months planned
    annotations = groups[0]["template"]["metadata"]["annotations"]
    assert annotations["kueue.x-k8s.io/podset-slice-size"] == "8"  # EP64 / 8 GPUs: 8 nodes per expert group
    assert annotations["kueue.x-k8s.io/podset-slice-required-topology"] == "topology.k8s.aws/network-node-layer-3"
    pod = groups[0]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert rayjob["metadata"]["annotations"]["orch.dev/world-size"] == "2048"
    golden = GOLDEN / "v3_rayjob.yaml"
    rendered = yaml.safe_dump_all(objects, sort_keys=True)
    if os.environ.get("ORCH_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert rendered == golden.read_text(), "the rendered RayJob changed: review it, then ORCH_UPDATE_GOLDEN=1"


def test_a_spot_pool_gets_its_own_group_and_spares():
    spec = load_spec(
        str(V3_SPEC),
        None,
        [
            "resources.pools=[{name: od, kind: on-demand, nodes: 128}, {name: spot, kind: spot, nodes: 160, "
            "price_per_gpu_hour: 0.9}, {name: spare, kind: spare, nodes: 8}]",
            "fault_tolerance.spare_nodes=4",
        ],
    )
    groups = job_manifests(spec, make_plan(spec), "j", K8sSettings())[1]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [(g["groupName"], g["replicas"], g["template"]["spec"]["priorityClassName"]) for g in groups] == [
        ("od", 128, "orch-training"),
        ("spot", 128, "orch-training"),
        ("spare", 4, "orch-spare"),
    ]


# ---------------------------------------------------------------- submit --target k8s


def kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "replay",
                "clusters": [{"name": "replay", "cluster": {"server": url}}],
                "users": [{"name": "orch", "user": {"token": "replay-token"}}],
                "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "orch", "namespace": "orch"}}],
            }
        )
    )
    return path


def submit(tmp_path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ORCH_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "submit",
            str(V3_SPEC),
            "--target",
            "k8s",
            "--kubeconfig",
            str(config),
            "--poll",
            "0.05",
            "--image",
            IMAGE,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/orch:0.1.0"


RAYJOBS = r"/apis/ray.io/v1/namespaces/orch/rayjobs"


def test_submit_creates_the_objects_and_follows_the_rayjob(tmp_path):
    with ReplayServer() as api:
        api.on("POST", "/api/v1/namespaces/orch/configmaps", status=201, body={"kind": "ConfigMap"})
        api.on("POST", RAYJOBS, status=201, body={"kind": "RayJob"})
        statuses = [
            {"jobDeploymentStatus": "Initializing"},
            {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "message": "done"},
        ]
        for status in statuses:
            api.on("GET", RAYJOBS + "/deepseek-v3-pretrain-.*", body={"kind": "RayJob", "status": status}, times=1)
        out = submit(tmp_path, kubeconfig(tmp_path, api.url))
        assert out.returncode == 0, out.stderr + out.stdout
        configmap = api.sent("POST", "/api/v1/namespaces/orch/configmaps")[0].body
        rayjob = api.sent("POST", RAYJOBS)[0].body
        assert rayjob["kind"] == "RayJob" and configmap["metadata"]["name"] == rayjob["metadata"]["name"] + "-spec"
        assert api.sent("POST", RAYJOBS)[0].headers["authorization"] == "Bearer replay-token"
        groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        assert sum(g["replicas"] for g in groups) == 256
        assert groups[0]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert "succeeded" in out.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "orchestrator", "list", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(tmp_path / "home")},
    )
    job = json.loads(listing.stdout)[0]
    assert job["state"] == "succeeded" and job["source"]["target"] == "k8s"
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", job["id"], "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(tmp_path / "home")},
    )
    assert [t["to_state"] for t in json.loads(status.stdout)["transitions"]] == [
        "queued",
        "placing",
        "running",
        "succeeded",
    ]


def test_submit_is_refused_where_the_standing_raycluster_holds_the_training_nodes(tmp_path):
    """overlays/prod runs jobs on the standing RayCluster (256 + 4 nodes): a V3 RayJob there would
    wait in Kueue behind it. The refusal comes before anything is created or recorded; under
    overlays/prod-rayjob (the standing cluster keeps only its head) the same submission goes ahead."""
    standing = {
        where: next(o for o in build(K8S / where) if o["kind"] == "RayCluster")
        for where in ("overlays/prod", "overlays/prod-rayjob")
    }
    assert {o["metadata"]["name"] for o in standing.values()} == {STANDING_CLUSTER}
    with ReplayServer() as api:
        api.on("GET", r"/apis/ray.io/v1/namespaces/orch/rayclusters/orch", body=standing["overlays/prod"])
        out = submit(tmp_path, kubeconfig(tmp_path, api.url), "--detach")
        assert api.sent("POST", RAYJOBS) == [] and api.sent("POST", "/api/v1/namespaces/orch/configmaps") == []
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "256 training worker(s)" in out.stderr and "k8s/overlays/prod-rayjob" in out.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "orchestrator", "list", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(tmp_path / "home")},
    )
    assert json.loads(listing.stdout) == []
    with ReplayServer() as api:
        api.on("GET", r"/apis/ray.io/v1/namespaces/orch/rayclusters/orch", body=standing["overlays/prod-rayjob"])
        api.on("POST", "/api/v1/namespaces/orch/configmaps", status=201, body={"kind": "ConfigMap"})
        api.on("POST", RAYJOBS, status=201, body={"kind": "RayJob"})
        out = submit(tmp_path, kubeconfig(tmp_path, api.url), "--detach")
        assert len(api.sent("POST", RAYJOBS)) == 1
    assert out.returncode == 0, out.stderr


def test_submit_without_an_image_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ORCH_IMAGE"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "submit",
            str(V3_SPEC),
            "--target",
            "k8s",
            "--kubeconfig",
            str(kubeconfig(tmp_path, "http://127.0.0.1:9")),
        ],
        capture_output=True,
        text=True,
        env={**env, "ORCH_HOME": str(tmp_path / "home")},
        timeout=120,
    )
    assert out.returncode == 2 and "--image" in out.stderr and "ORCH_IMAGE" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "code, reason, message, expected",
    [
        (403, "Forbidden", 'rayjobs.ray.io is forbidden: User "dev" cannot create resource "rayjobs"', "rbac.yaml"),
        (409, "AlreadyExists", 'rayjobs.ray.io "deepseek-v3-pretrain" already exists', "already exists"),
        (
            422,
            "Invalid",
            'RayJob.ray.io "x" is invalid',
            "spec.rayClusterSpec.workerGroupSpecs[0].replicas: Invalid value",
        ),
    ],
)
def test_submit_refusals_become_clear_messages(tmp_path, code, reason, message, expected):
    details = (
        {
            "causes": [
                {
                    "field": "spec.rayClusterSpec.workerGroupSpecs[0].replicas",
                    "message": "Invalid value: -1: must be >= 0",
                }
            ]
        }
        if code == 422
        else None
    )
    with ReplayServer() as api:
        api.on("POST", "/api/v1/namespaces/orch/configmaps", status=201, body={"kind": "ConfigMap"})
        api.on("POST", RAYJOBS, status=code, body=status_body(code, reason, message, details))
        out = submit(tmp_path, kubeconfig(tmp_path, api.url))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(code) in out.stderr and expected in out.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "orchestrator", "list", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(tmp_path / "home")},
    )
    assert json.loads(listing.stdout) == []  # nothing recorded for a job that was not created


# ---------------------------------------------------------------- terraform


def unquote(node):
    """python-hcl2 keeps HCL's quotes on names and strings; drop them."""
    if isinstance(node, dict):
        return {unquote(k): unquote(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [unquote(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def load_tf() -> dict:
    merged: dict = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            for key, value in unquote(hcl2.load(handle)).items():
                merged.setdefault(key, []).extend(value)
    return merged


def _named(blocks: list[dict]) -> dict:
    out = {}
    for block in blocks:
        for kind, named in block.items():
            for name, body in named.items():
                out[(kind, name)] = body
    return out


def test_terraform_declares_the_eks_deployment():
    tf = load_tf()
    modules = {name: body for block in tf["module"] for name, body in block.items()}
    assert modules["eks"]["source"] == "terraform-aws-modules/eks/aws"
    assert modules["vpc"]["source"] == "terraform-aws-modules/vpc/aws"
    for irsa in ("orch_ray_irsa", "orch_controller_irsa", "ebs_csi_irsa", "nth_irsa"):  # one role per account
        assert "iam-role-for-service-accounts-eks" in modules[irsa]["source"]
    accounts = [
        modules[m]["oidc_providers"]["main"]["namespace_service_accounts"]
        for m in ("orch_ray_irsa", "orch_controller_irsa")
    ]
    assert accounts == [["orch:orch-ray"], ["orch:orch-controller"]]
    resources = _named(tf["resource"])
    assert resources[("aws_placement_group", "gpu")]["strategy"] == "cluster"
    assert ("aws_s3_bucket_versioning", "checkpoints") in resources
    assert ("aws_s3_bucket_server_side_encryption_configuration", "checkpoints") in resources
    assert ("aws_s3_bucket_public_access_block", "checkpoints") in resources
    lifecycle = json.dumps(resources[("aws_s3_bucket_lifecycle_configuration", "checkpoints")])
    assert "abort_incomplete_multipart_upload" in lifecycle and "noncurrent_version_expiration" in lifecycle
    charts = {body["chart"] for (kind, _), body in resources.items() if kind == "helm_release"}
    assert charts == {
        "kuberay-operator",
        "aws-node-termination-handler",
        "nvidia-device-plugin",
        "aws-efa-k8s-device-plugin",
        "kueue",
    }
    variables = {name for block in tf["variable"] for name in block}
    assert {
        "gpu_instance_type",
        "gpu_on_demand_nodes",
        "gpu_spot_nodes",
        "gpu_spare_nodes",
        "api_allowed_cidrs",
        "gpu_on_demand_price_per_hour",
        "gpu_spot_price_per_hour",
        "checkpoint_bucket",
        "gpu_capacity_reservation_id",
        "gpu_capacity_block",
    } <= variables
    outputs = {name for block in tf["output"] for name in block}
    assert {
        "checkpoint_uri",
        "service_account_roles",
        "kubeconfig_command",
        "gpu_pools",
        "idle_cost_per_hour",
        "orch_image_repository",
        "scale_commands",
    } <= outputs


TF = shutil.which("terraform") or shutil.which("tofu")


@pytest.mark.skipif(TF is None, reason="no terraform or tofu binary here")
def test_terraform_fmt_is_clean():
    out = subprocess.run([TF, "fmt", "-check", "-recursive", str(TERRAFORM)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(TF is None, reason="no terraform or tofu binary here")
def test_terraform_validate(tmp_path):
    work = tmp_path / "tf"
    shutil.copytree(TERRAFORM, work)
    init = subprocess.run(
        [TF, "init", "-backend=false", "-input=false"], cwd=work, capture_output=True, text=True, timeout=300
    )
    said = init.stdout + init.stderr
    if init.returncode != 0 and ("registry" in said or "no such host" in said):
        pytest.skip("terraform init cannot download the providers and modules (no network): validate not run")
    assert init.returncode == 0, init.stdout + init.stderr
    out = subprocess.run([TF, "validate"], cwd=work, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_ray_pod_carries_the_health_check_settings_ray_reads():
    """A lost node is noticed within seconds, not Ray's ~15-65 s: the head's GCS and Ray Train's controller
    read these from their environment. The names are the ones Ray 2.60 reads (its RayConfig keys, and Ray
    Train's env var), so a renamed setting fails here rather than being ignored on the cluster; a killed
    raylet is dead in threshold x period, and a slow one must stall threshold x timeout to be."""
    import ray._raylet
    from ray.train.v2._internal.constants import HEALTH_CHECK_INTERVAL_S_ENV_VAR

    from orchestrator.cluster.embedded import EMBEDDED_RAY_ENV
    from orchestrator.k8s.render import HEALTH_ENV

    spec = load_spec(str(V3_SPEC))
    rayjob = job_manifests(spec, make_plan(spec), "deepseek-v3-pretrain-0001", K8sSettings())[1]
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert {k: env.get(k) for k in HEALTH_ENV} == HEALTH_ENV, container["name"]
    for settings in (HEALTH_ENV, EMBEDDED_RAY_ENV):
        gcs = {k.removeprefix("RAY_"): int(v) for k, v in settings.items() if k.startswith("RAY_health_check_")}
        assert gcs and all(hasattr(ray._raylet.Config, key) for key in gcs), gcs
        assert HEALTH_CHECK_INTERVAL_S_ENV_VAR in settings
        killed = gcs["health_check_failure_threshold"] * gcs["health_check_period_ms"] / 1000
        stalled = gcs["health_check_failure_threshold"] * gcs["health_check_timeout_ms"] / 1000
        assert killed <= 3 and stalled >= 15, settings
