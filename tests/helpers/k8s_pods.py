"""What the kubelet makes of a rendered pod template, reproduced for the parts orch's pods depend on:
the environment a container starts with, the credentials its process runs with, and the owner and
mode of the files in its Secret and ConfigMap volumes.

Followed from kubernetes/kubernetes (the VolumeOwnership version of pkg/volume/volume_linux.go, v1.30+):

- ``pkg/volume/secret/secret.go``: ``SetUpAt`` writes each key with the item's ``mode`` or the volume's
  ``defaultMode`` (0644 when unset) through the AtomicWriter, as the kubelet's user (root), then calls
  ``volume.SetVolumeOwnership`` with the pod's ``fsGroup``; ``GetAttributes`` says ``ReadOnly: true``.
  ``pkg/volume/configmap/configmap.go`` does the same for ConfigMap volumes.
- ``pkg/volume/volume_linux.go``: with no ``fsGroup`` nothing changes; with one, ``changeFilePermission``
  ``Lchown(path, -1, fsGroup)`` (the owner stays root) and ``Chmod(mode | roMask)`` for a read-only
  volume (``roMask = 0440``; ``rwMask = 0660`` otherwise). ``fsGroupChangePolicy`` does not apply to
  these ephemeral volumes.
- ``pkg/kubelet/kuberuntime/security_context.go`` (``determineEffectiveSecurityContext``,
  ``verifyRunAsNonRoot``): the container's ``runAsUser``/``runAsGroup`` override the pod's; the
  process's supplementary groups are the pod's ``fsGroup`` and ``supplementalGroups``. Without
  ``runAsUser`` the image's ``USER`` applies.

Access is then POSIX's: the owner's bits for the owner, else the group's bits for a process in the
file's group (primary or supplementary), else the others' bits; the containers drop every
capability, so not even uid 0 would bypass them (CAP_DAC_OVERRIDE).
"""

from __future__ import annotations

from dataclasses import dataclass

KUBELET_UID = KUBELET_GID = 0
SECRET_DEFAULT_MODE = 0o644  # v1.SecretVolumeSourceDefaultMode, v1.ConfigMapVolumeSourceDefaultMode
RO_MASK, RW_MASK = 0o440, 0o660


@dataclass(frozen=True)
class FileOnNode:
    uid: int
    gid: int
    mode: int


@dataclass(frozen=True)
class Process:
    uid: int
    gid: int
    groups: frozenset[int]


def pod_templates(objects: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod template) of every workload in rendered manifests, KubeRay kinds included."""
    found = []
    for obj in objects:
        name, spec = f"{obj['kind']}/{obj['metadata']['name']}", obj.get("spec", {})
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((name, spec["template"]))
        cluster = spec.get("rayClusterSpec", spec) if obj["kind"] in ("RayCluster", "RayJob") else None
        if cluster:
            found.append((f"{name} head", cluster["headGroupSpec"]["template"]))
            found += [(f"{name} {g['groupName']}", g["template"]) for g in cluster.get("workerGroupSpecs", [])]
        if obj["kind"] == "RayJob" and spec.get("submitterPodTemplate"):
            found.append((f"{name} submitter", spec["submitterPodTemplate"]))
    return found


def process_of(pod: dict, container: dict, image_uid: int, image_gid: int) -> Process:
    pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser", image_uid))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", image_gid))
    groups = set(pod_ctx.get("supplementalGroups", []))
    if "fsGroup" in pod_ctx:
        groups.add(pod_ctx["fsGroup"])
    return Process(uid, gid, frozenset(groups))


def projected_file(pod: dict, volume: dict, key: str) -> FileOnNode:
    """Owner and mode of ``key`` in a Secret or ConfigMap volume once the kubelet has set it up."""
    source = volume.get("secret") or volume.get("configMap")
    if source is None:
        raise ValueError(f"volume {volume['name']} is neither a Secret nor a ConfigMap volume")
    items = {item["key"]: item for item in source.get("items", [])}
    mode = items.get(key, {}).get("mode", source.get("defaultMode", SECRET_DEFAULT_MODE))
    gid = KUBELET_GID
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    if fs_group is not None:
        gid, mode = fs_group, mode | RO_MASK  # GetAttributes().ReadOnly is true for both plugins
    return FileOnNode(KUBELET_UID, gid, mode)


def can_read(process: Process, file: FileOnNode) -> bool:
    if process.uid == file.uid:
        return bool(file.mode & 0o400)
    if file.gid == process.gid or file.gid in process.groups:
        return bool(file.mode & 0o040)
    return bool(file.mode & 0o004)


def container_env(container: dict, objects: list[dict], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The environment the container starts with: literal values, ConfigMap keys
    from the rendered objects, Secret keys from ``secrets`` (Secrets are created outside Git)."""
    config = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = config[ref["name"]][ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            raise ValueError(f"env {var['name']}: unsupported source {sorted(source)}")
    return env
