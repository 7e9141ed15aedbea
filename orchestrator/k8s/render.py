"""Render a job spec into KubeRay objects: the RayCluster sized to the plan's gang (a worker group
per pool, 8 GPUs and the EFA devices per pod, ``/dev/shm`` for NCCL, tolerations and node affinity
for the pool, the Ray auth token from a Secret, GCS fault tolerance on Redis), and the RayJob that
trains the spec on it, with the resolved spec in a ConfigMap.

The worker pods' Ray node labels (``orch-node``, ``orch-pool``, ``orch-pool-kind``, ``orch-topology``)
are the ones the scheduler and the ledger use on the embedded cluster; an init container reads the
node's own labels (rack / network block) and writes them to the file ``ray start --labels-file``
takes, because the downward API cannot expose node labels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from orchestrator.plan.planner import Plan
from orchestrator.spec.schema import JobSpec

RAY_VERSION = "2.60.0"
LABELS_FILE = "/etc/orch/ray-labels.yaml"
EFA_PER_NODE = 32  # p5.48xlarge: 32 EFA interfaces


@dataclass(frozen=True)
class K8sSettings:
    namespace: str = "orch"
    image: str = "ghcr.io/orch-dev/orch:0.1.0"
    service_account: str = "orch-ray"
    redis_address: str = "orch-redis.orch.svc.cluster.local:6379"
    shm_size: str = "256Gi"
    worker_cpu: str = "180"
    worker_memory: str = "1800Gi"
    head_cpu: str = "16"
    head_memory: str = "64Gi"
    efa_per_node: int = EFA_PER_NODE
    grace_seconds: int = 120  # the longest notice window (AWS): time to checkpoint on eviction


def dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label) from a job id."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "orch-job"


def _env(settings: K8sSettings) -> list[dict]:
    return [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "orch-ray-auth", "key": "token"}}},
            {"name": "ORCH_STATE_URL", "valueFrom": {"secretKeyRef": {"name": "orch-postgres", "key": "url"}}},
            {"name": "DS_ACCELERATOR", "value": "cuda"}]


def _worker_group(spec: JobSpec, pool, replicas: int, settings: K8sSettings) -> dict:
    gpus = spec.resources.gpus_per_node
    kind = pool.kind
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if kind in ("spot", "spare"):
        tolerations.append({"key": "orch.dev/pool-kind", "operator": "Equal", "value": kind, "effect": "NoSchedule"})
    limits = {"cpu": settings.worker_cpu, "memory": settings.worker_memory, "nvidia.com/gpu": str(gpus)}
    if settings.efa_per_node:
        limits["vpc.amazonaws.com/efa"] = str(settings.efa_per_node)
    labels_script = ("python -m orchestrator.k8s.node_labels --node \"$NODE_NAME\" "
                     f"--pool {pool.name} --kind {kind} --out {LABELS_FILE}")
    return {
        "groupName": pool.name,
        "replicas": replicas, "minReplicas": replicas, "maxReplicas": max(replicas, pool.nodes),
        "rayStartParams": {"labels-file": LABELS_FILE, "num-gpus": str(gpus),
                           "resources": json.dumps({"orch_device": gpus})},
        "template": {
            "metadata": {"labels": {"orch.dev/pool": pool.name, "orch.dev/pool-kind": kind, "app.kubernetes.io/part-of": "orch"}},
            "spec": {
                "serviceAccountName": settings.service_account,
                "priorityClassName": "orch-spare" if kind == "spare" else "orch-training",
                "terminationGracePeriodSeconds": settings.grace_seconds,
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "orch.dev/pool", "operator": "In", "values": [pool.name]}]}]}}},
                "tolerations": tolerations,
                "initContainers": [{"name": "ray-node-labels", "image": settings.image,
                                    "command": ["/bin/sh", "-c", labels_script],
                                    "env": [_env(settings)[0]],
                                    "volumeMounts": [{"name": "orch-labels", "mountPath": "/etc/orch"}]}],
                "containers": [{
                    "name": "ray-worker", "image": settings.image,
                    "resources": {"limits": limits, "requests": dict(limits)},
                    "env": _env(settings),
                    "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}},  # EFA pins memory
                    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                                     {"name": "orch-labels", "mountPath": "/etc/orch"}]}],
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
                            {"name": "orch-labels", "emptyDir": {}}],
            }},
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


def ray_cluster_spec(spec: JobSpec, settings: K8sSettings, spec_configmap: str | None = None) -> dict:
    head_volumes = [{"name": "ray-logs", "emptyDir": {}}]
    head_mounts = [{"name": "ray-logs", "mountPath": "/tmp/ray"}]
    if spec_configmap:
        head_volumes.append({"name": "job-spec", "configMap": {"name": spec_configmap}})
        head_mounts.append({"name": "job-spec", "mountPath": "/etc/orch/job", "readOnly": True})
    return {
        "rayVersion": RAY_VERSION,
        "gcsFaultToleranceOptions": {"redisAddress": settings.redis_address,
                                     "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "orch-redis",
                                                                                      "key": "password"}}}},
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0",
                               "labels": "orch-node=head,orch-pool=control,orch-pool-kind=control",
                               "resources": json.dumps({"orch_head": 1})},
            "template": {"metadata": {"labels": {"app.kubernetes.io/part-of": "orch"}}, "spec": {
                "serviceAccountName": settings.service_account,
                "priorityClassName": "orch-control",
                "nodeSelector": {"orch.dev/pool-kind": "system"},
                "containers": [{"name": "ray-head", "image": settings.image,
                                "resources": {"limits": {"cpu": settings.head_cpu, "memory": settings.head_memory},
                                              "requests": {"cpu": settings.head_cpu, "memory": settings.head_memory}},
                                "env": _env(settings),
                                "ports": [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                                          {"name": "client", "containerPort": 10001}],
                                "volumeMounts": head_mounts}],
                "volumes": head_volumes}}},
        "workerGroupSpecs": [_worker_group(spec, pool, replicas, settings) for pool, replicas in pool_replicas(spec)],
    }


def job_manifests(spec: JobSpec, plan: Plan, job_id: str, settings: K8sSettings) -> list[dict]:
    """The ConfigMap holding the resolved spec and the RayJob that trains it."""
    name = dns_name(job_id)
    labels = {"app.kubernetes.io/part-of": "orch", "orch.dev/job": name}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": f"{name}-spec", "namespace": settings.namespace, "labels": labels},
                 "data": {"spec.json": json.dumps(spec.model_dump(mode="json"), sort_keys=True)}}
    rayjob = {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels,
                     "annotations": {"orch.dev/world-size": str(plan.mesh.world_size),
                                     "orch.dev/nodes": str(plan.mesh.nodes),
                                     "orch.dev/total-steps": str(plan.total_steps)}},
        "spec": {
            "entrypoint": f"python -m orchestrator.train.ray_job --spec /etc/orch/job/spec.json --job-id {job_id}",
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "backoffLimit": spec.fault_tolerance.max_restarts,  # each retry resumes from the last checkpoint
            "rayClusterSpec": ray_cluster_spec(spec, settings, f"{name}-spec"),
        },
    }
    return [configmap, rayjob]


def cluster_manifest(spec: JobSpec, name: str, settings: K8sSettings) -> dict:
    """A long-lived RayCluster for the spec's pools (the control plane submits jobs to it)."""
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": name, "namespace": settings.namespace, "labels": {"app.kubernetes.io/part-of": "orch"}},
            "spec": ray_cluster_spec(spec, settings)}
