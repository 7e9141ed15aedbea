"""Render a job spec into KubeRay objects: the RayCluster sized to the plan's gang (a worker group
per pool, 8 GPUs and the EFA devices per pod, ``/dev/shm`` for NCCL, tolerations and node affinity
for the pool, Ray token auth through ``authOptions``, GCS fault tolerance on Redis), and the RayJob
that trains the spec on it, with the resolved spec in a ConfigMap, queued through Kueue.

The shapes follow KubeRay v1.7.0 (the version of the vendored CRDs and of the Helm chart Terraform
installs), read from ``ray-operator/controllers/ray/common/pod.go`` and ``utils/validation.go``:

- rayStartParams become ``--key=value`` pasted into ``/bin/bash -c``, so a value with spaces or
  quotes must carry its own shell quoting: ``resources`` is single-quoted JSON, exactly the form
  KubeRay itself writes (``fmt.Sprintf("'%s'", json)`` in ``updateRayStartParamsResources``).
- ``rayStartParams['labels']`` is refused (``validateRayGroupLabels``): the head's Ray node labels go
  in the group's ``labels`` field; workers write theirs to the file ``--labels-file`` names, because
  their topology comes from the node (an init container reads it; the downward API cannot).
- ``authOptions`` (mode ``token``, Ray >= 2.52) makes KubeRay give the token to every Ray container
  and to the RayJob's submitter; the Secret's key is ``auth_token``.
- ``deletionStrategy.deletionRules`` replaces ``shutdownAfterJobFinishes``/TTL (they are exclusive).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

from orchestrator.plan.planner import Plan
from orchestrator.spec.schema import JobSpec

RAY_VERSION = "2.60.0"  # >= 2.52.0: KubeRay's authOptions token mode requires it
LABELS_FILE = "/etc/orch/ray-labels.yaml"
EFA_PER_NODE = 32  # p5.48xlarge: 32 EFA interfaces
RAY_AUTH_SECRET = "orch-ray-auth"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue TAS: every slice of `slice size` pods (an expert-parallel group of nodes) inside one block of
# the EKS network topology, the whole gang preferably under one spine (kueue pkg/controller/constants).
SLICE_TOPOLOGY = "kueue.x-k8s.io/podset-slice-required-topology"
SLICE_SIZE = "kueue.x-k8s.io/podset-slice-size"
PREFERRED_TOPOLOGY = "kueue.x-k8s.io/podset-preferred-topology"
NETWORK_LAYERS = (
    "topology.k8s.aws/network-node-layer-1",
    "topology.k8s.aws/network-node-layer-2",
    "topology.k8s.aws/network-node-layer-3",
)
RUN_AS = 1000  # the image's non-root user (docker/Dockerfile)
DEADLINE_MARGIN = 1.5  # activeDeadlineSeconds: the plan's wall-clock time times this


@dataclass(frozen=True)
class K8sSettings:
    namespace: str = "orch"
    image: str = "orch"  # a Kustomize image name; `--image`/ORCH_IMAGE give the real one
    service_account: str = "orch-ray"
    redis_address: str = "orch-redis.orch.svc.cluster.local:6379"
    shm_size: str = "256Gi"
    worker_cpu: str = "180"  # p5.48xlarge: 192 vCPU, 2,048 GiB; the rest is the kubelet's and daemons'
    worker_memory: str = "1800Gi"
    head_cpu: str = "8"  # fits an m7i.4xlarge system node next to PostgreSQL and Redis
    head_memory: str = "32Gi"
    efa_per_node: int = EFA_PER_NODE
    grace_seconds: int = 120  # the longest notice window (AWS): time to checkpoint on eviction


# KubeRay refuses a RayJob name over 47 characters (MaxRayJobNameLength = MaxRayClusterNameLength - 6, in
# ray-project/kuberay ray-operator/controllers/ray/utils/constant.go) or that is not a DNS-1035 label.
MAX_RAYJOB_NAME = 47


def dns_name(text: str, limit: int = MAX_RAYJOB_NAME) -> str:
    """A Kubernetes object name (DNS-1035 label, at most ``limit`` characters) from a job id.

    An id that is already such a name is kept; any other is shortened or cleaned and given 8 hex
    characters of its SHA-256, so two long ids that share a prefix never get the same name."""
    if re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", text) and len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name[:1].isalpha():
        name = "j-" + name
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def quoted_resources(resources: dict[str, int]) -> str:
    """A ``resources`` rayStartParam that survives ``bash -c``: single-quoted JSON, as KubeRay writes it."""
    return "'" + json.dumps(resources, sort_keys=True) + "'"


# How quickly a lost node is noticed. The GCS (on the head) sends a raylet a health check every
# ``period`` once the last one answered or timed out, and declares it dead after ``threshold`` failures
# (ray-project/ray, src/ray/gcs/gcs_health_check_manager.cc at 2a48f19; Ray 2.60's defaults, read from
# ``ray._raylet.Config``: 3 s, 10 s, 5). A pod whose raylet died refuses at once: dead in about
# threshold x period, 3 s; a node that vanished from the network lets each check run to its timeout: dead
# in about threshold x (timeout + period), 18 s, against about 65 s with Ray's defaults. A raylet slowed by
# its training load has 5 s to answer each check. Ray Train's controller (on the head, beside the job
# runner) polls its workers every second instead of every 2 s (ray/train/v2/_internal/constants.py).
# Unmeasured on a cluster: README, Limits.
HEALTH_ENV = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "5000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1",
}


# The head starts this many worker processes at once: Ray's default is the node's CPUs, at least 1, and
# the head runs with num-cpus 0, so 1, and a prestart beyond it is dropped (src/ray/raylet/worker_pool.cc):
# a job's warm control processes (train/warm_control.py: a runner and five Ray Train actors) would get
# one, and a restart's new processes on the head would start one after another. As on the embedded head
# (cluster/embedded.py: HEAD_RAY_ENV).
HEAD_ENV = {"RAY_worker_maximum_startup_concurrency": "6"}


def _env() -> list[dict]:
    return [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "ORCH_STATE_URL", "valueFrom": {"secretKeyRef": {"name": "orch-postgres", "key": "url"}}},
        {"name": "DS_ACCELERATOR", "value": "cuda"},
    ] + [{"name": name, "value": value} for name, value in HEALTH_ENV.items()]


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _tolerations(kind: str) -> list[dict]:
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if kind in ("spot", "spare"):
        tolerations.append({"key": "orch.dev/pool-kind", "operator": "Equal", "value": kind, "effect": "NoSchedule"})
    return tolerations


def _worker_template(spec: JobSpec, pool, replicas: int, settings: K8sSettings) -> dict:
    gpus, kind = spec.resources.gpus_per_node, pool.kind
    limits = {"cpu": settings.worker_cpu, "memory": settings.worker_memory, "nvidia.com/gpu": str(gpus)}
    if settings.efa_per_node:
        limits["vpc.amazonaws.com/efa"] = str(settings.efa_per_node)
    labels_script = (
        'python -m orchestrator.k8s.node_labels --node "$NODE_NAME" '
        f"--pool {pool.name} --kind {kind} --out {LABELS_FILE}"
    )
    return {
        "metadata": {
            "labels": {"orch.dev/pool": pool.name, "orch.dev/pool-kind": kind, "app.kubernetes.io/part-of": "orch"},
            "annotations": topology_annotations(spec, pool.kind, replicas),
        },
        "spec": {
            "serviceAccountName": settings.service_account,
            "priorityClassName": "orch-spare" if kind == "spare" else "orch-training",
            "terminationGracePeriodSeconds": settings.grace_seconds,
            "securityContext": POD_SECURITY,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "orch.dev/pool", "operator": "In", "values": [pool.name]}]}
                        ]
                    }
                }
            },
            "tolerations": _tolerations(kind),
            "initContainers": [
                {
                    "name": "ray-node-labels",
                    "image": settings.image,
                    "command": ["/bin/sh", "-c", labels_script],
                    "env": [_env()[0]],
                    "securityContext": CONTAINER_SECURITY,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "volumeMounts": [{"name": "orch-labels", "mountPath": "/etc/orch"}],
                }
            ]
            + _efa_check(limits, settings),
            "containers": [
                {
                    "name": "ray-worker",
                    "image": settings.image,
                    "resources": {"limits": limits, "requests": dict(limits)},
                    "env": _env(),
                    "securityContext": CONTAINER_SECURITY,
                    "volumeMounts": [
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "orch-labels", "mountPath": "/etc/orch"},
                    ],
                }
            ],
            "volumes": [
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
                {"name": "orch-labels", "emptyDir": {}},
            ],
        },
    }


def _efa_check(limits: dict, settings: K8sSettings) -> list[dict]:
    """The init container that refuses to start the worker unless NCCL picks EFA (efa_check.py); it
    holds the same GPUs and EFA devices as the worker (init containers run before, not beside it)."""
    if not settings.efa_per_node:
        return []
    return [
        {
            "name": "efa-check",
            "image": settings.image,
            "command": ["python", "-m", "orchestrator.k8s.efa_check"],
            "securityContext": CONTAINER_SECURITY,
            "resources": {"limits": dict(limits), "requests": dict(limits)},
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        }
    ]


def topology_annotations(spec: JobSpec, kind: str, replicas: int) -> dict[str, str]:
    """Kueue topology-aware scheduling: each expert-parallel group of nodes (the all-to-all heavy
    part) inside one block of EKS's network topology, the group preferably under one spine. Spares
    are single nodes: no slice."""
    per_group = max(1, spec.parallelism.expert // max(1, spec.resources.gpus_per_node))
    annotations = {PREFERRED_TOPOLOGY: NETWORK_LAYERS[1]}
    if kind != "spare" and replicas % per_group == 0:
        annotations.update({SLICE_TOPOLOGY: NETWORK_LAYERS[2], SLICE_SIZE: str(per_group)})
    return annotations


def _worker_group(spec: JobSpec, pool, replicas: int, settings: K8sSettings) -> dict:
    gpus = spec.resources.gpus_per_node
    return {
        "groupName": pool.name,
        "replicas": replicas,
        "minReplicas": replicas,
        "maxReplicas": max(replicas, pool.nodes),
        "rayStartParams": {
            "labels-file": LABELS_FILE,
            "num-gpus": str(gpus),
            "resources": quoted_resources({"orch_device": gpus}),
        },
        "template": _worker_template(spec, pool, replicas, settings),
    }


def pool_replicas(spec: JobSpec) -> list[tuple[object, int]]:
    """Each pool with the pods the job needs from it: the gang from non-spare pools in spec order,
    and ``fault_tolerance.spare_nodes`` from the spare pools."""
    taken = [(pool, take) for pool, take in spec.pools_used() if take > 0]
    spares = spec.fault_tolerance.spare_nodes
    for pool in spec.resources.pools:
        if pool.kind == "spare" and spares > 0:
            take = min(spares, pool.nodes)
            taken.append((pool, take))
            spares -= take
    return taken


def _head_group(settings: K8sSettings, spec_configmap: str | None) -> dict:
    volumes = [{"name": "ray-logs", "emptyDir": {}}]
    mounts = [{"name": "ray-logs", "mountPath": "/tmp/ray"}]
    if spec_configmap:
        volumes.append({"name": "job-spec", "configMap": {"name": spec_configmap}})
        mounts.append({"name": "job-spec", "mountPath": "/etc/orch/job", "readOnly": True})
    size = {"cpu": settings.head_cpu, "memory": settings.head_memory}
    return {
        # num-cpus 0: no training task or actor lands on the head; orch's own actors ask for orch_head
        "rayStartParams": {
            "dashboard-host": "0.0.0.0",
            "num-cpus": "0",
            "num-gpus": "0",
            "resources": quoted_resources({"orch_head": 1}),
        },
        "labels": {"orch-node": "head", "orch-pool": "control", "orch-pool-kind": "control"},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/part-of": "orch"}},
            "spec": {
                "serviceAccountName": settings.service_account,
                "priorityClassName": "orch-control",
                "securityContext": POD_SECURITY,
                "nodeSelector": {"orch.dev/pool-kind": "system"},
                "containers": [
                    {
                        "name": "ray-head",
                        "image": settings.image,
                        "resources": {"limits": dict(size), "requests": dict(size)},
                        "env": _env() + [{"name": name, "value": value} for name, value in HEAD_ENV.items()],
                        "securityContext": CONTAINER_SECURITY,
                        "ports": [
                            {"name": "gcs", "containerPort": 6379},
                            {"name": "dashboard", "containerPort": 8265},
                            {"name": "client", "containerPort": 10001},
                        ],
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
            },
        },
    }


def ray_cluster_spec(spec: JobSpec, settings: K8sSettings, spec_configmap: str | None = None) -> dict:
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token", "secretName": RAY_AUTH_SECRET},
        "gcsFaultToleranceOptions": {
            "redisAddress": settings.redis_address,
            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "orch-redis", "key": "password"}}},
        },
        "headGroupSpec": _head_group(settings, spec_configmap),
        "workerGroupSpecs": [_worker_group(spec, pool, replicas, settings) for pool, replicas in pool_replicas(spec)],
    }


def deletion_rules() -> list[dict]:
    """Free the GPUs at once when the job ends; keep the head (logs, dashboard) a while to look at a
    failure; the RayJob object itself stays for `orch status` and the ledger."""
    return [
        {"policy": "DeleteWorkers", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 0}},
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 600}},
        {"policy": "DeleteWorkers", "condition": {"jobStatus": "FAILED", "ttlSeconds": 0}},
        {"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED", "ttlSeconds": 86400}},
        {"policy": "DeleteCluster", "condition": {"jobDeploymentStatus": "Failed", "ttlSeconds": 3600}},
    ]


def active_deadline_seconds(plan: Plan) -> int:
    """The plan's wall-clock time with a margin (int32, as the CRD's field)."""
    return min(2**31 - 1, max(3600, math.ceil(plan.total_days * 86400 * DEADLINE_MARGIN)))


def job_manifests(spec: JobSpec, plan: Plan, job_id: str, settings: K8sSettings) -> list[dict]:
    """The ConfigMap holding the resolved spec and the RayJob that trains it."""
    name = dns_name(job_id)
    labels = {"app.kubernetes.io/part-of": "orch", "orch.dev/job": name}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-spec", "namespace": settings.namespace, "labels": labels},
        "data": {"spec.json": json.dumps(spec.model_dump(mode="json"), sort_keys=True)},
    }
    rayjob = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {**labels, QUEUE_LABEL: dns_name(spec.team)},
            "annotations": {
                "orch.dev/world-size": str(plan.mesh.world_size),
                "orch.dev/nodes": str(plan.mesh.nodes),
                "orch.dev/total-steps": str(plan.total_steps),
            },
        },
        "spec": {
            "entrypoint": f"python -m orchestrator.k8s.entrypoint --spec /etc/orch/job/spec.json --job-id {job_id}",
            "submissionMode": "K8sJobMode",
            "activeDeadlineSeconds": active_deadline_seconds(plan),
            # each KubeRay retry builds a new RayCluster (all its nodes): at most two, for a cluster that
            # broke as a whole; a lost node is replaced inside the cluster (workersToDelete) instead
            "backoffLimit": min(2, 2 if (cap := spec.fault_tolerance.lifetime_restarts) is None else cap),
            "submitterConfig": {"backoffLimit": 2},
            "deletionStrategy": {"deletionRules": deletion_rules()},
            "rayClusterSpec": ray_cluster_spec(spec, settings, f"{name}-spec"),
        },
    }
    return [configmap, rayjob]


def cluster_manifest(spec: JobSpec, name: str, settings: K8sSettings) -> dict:
    """A long-lived RayCluster for the spec's pools (the control plane submits jobs to it)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "orch", QUEUE_LABEL: dns_name(spec.team)},
        },
        "spec": ray_cluster_spec(spec, settings),
    }
