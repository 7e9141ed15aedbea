"""Every file a pod mounts from a Secret or ConfigMap volume is readable by the process that needs it,
and a token file stays private enough for orch to accept it.

The kubelet's semantics (file owner root, ``defaultMode``, ``fsGroup`` OR-ing r--r----- into the mode of
a read-only volume) are reproduced in tests/helpers/k8s_pods.py from kubernetes/kubernetes
``pkg/volume/secret/secret.go`` and ``pkg/volume/volume_linux.go``; the process credentials from the
pod and container securityContext over the image's ``USER`` (docker/Dockerfile)."""

from __future__ import annotations

import re

import pytest
import yaml

from orchestrator.k8s.kustomize import build
from tests.conftest import ROOT
from tests.helpers.k8s_pods import FileOnNode, Process, can_read, pod_templates, process_of, projected_file

WHERE = ["base", "overlays/dev", "overlays/prod"]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def image_user() -> tuple[int, int]:
    """(uid, gid) the orch image runs as: its ``USER uid:gid``, which must be the user it creates."""
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert user, "docker/Dockerfile must name its user as USER uid:gid"
    uid, gid = int(user.group(1)), int(user.group(2))
    assert f"groupadd --gid {gid} " in DOCKERFILE and f"useradd --uid {uid} --gid {gid} " in DOCKERFILE
    return uid, gid


def rendered() -> list[tuple[str, list[dict]]]:
    golden = [d for d in yaml.safe_load_all((ROOT / "tests" / "golden" / "v3_rayjob.yaml").read_text()) if d]
    return [(where, build(ROOT / "k8s" / where)) for where in WHERE] + [("v3 RayJob", golden)]


def mounted_files(pod: dict):
    """(container, volume, mount) for every Secret/ConfigMap volume a container mounts."""
    volumes = {v["name"]: v for v in pod.get("volumes", []) if "secret" in v or "configMap" in v}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for mount in container.get("volumeMounts", []):
            if mount["name"] in volumes:
                yield container, volumes[mount["name"]], mount


def test_the_kubelet_semantics_as_reproduced():
    """The two cases the manifests hinge on, as the kubelet's code decides them."""
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000}}
    volume = {"name": "t", "secret": {"secretName": "s", "defaultMode": 0o400}}
    assert projected_file(pod, volume, "tokens") == FileOnNode(0, 0, 0o400)  # no fsGroup: root's alone
    assert not can_read(process_of(pod, {}, 1000, 1000), projected_file(pod, volume, "tokens"))
    pod["securityContext"]["fsGroup"] = 2000
    assert projected_file(pod, volume, "tokens") == FileOnNode(0, 2000, 0o440)
    assert can_read(process_of(pod, {}, 1000, 1000), projected_file(pod, volume, "tokens"))  # via fsGroup
    assert can_read(Process(5, 2000, frozenset()), FileOnNode(0, 2000, 0o440))
    assert not can_read(Process(5, 7, frozenset()), FileOnNode(0, 2000, 0o440))


@pytest.mark.parametrize("where, objects", rendered(), ids=[w for w, _ in rendered()])
def test_every_mounted_secret_is_readable_by_its_container(where, objects):
    uid, gid = image_user()
    checked = 0
    for name, template in pod_templates(objects):
        pod = template["spec"]
        for container, volume, mount in mounted_files(pod):
            source = volume.get("secret") or volume["configMap"]
            keys = [item["key"] for item in source.get("items", [])] or ["any key"]
            process = process_of(pod, container, uid, gid)
            for key in keys:
                file = projected_file(pod, volume, key)
                assert can_read(process, file), (
                    f"{where} {name}: container {container['name']} (uid {process.uid}, gid {process.gid}, groups "
                    f"{sorted(process.groups)}) cannot read {mount['mountPath']}/{key} (owner {file.uid}:{file.gid}, "
                    f"mode {file.mode:o}); set the pod's fsGroup to the container's group"
                )
                if "secret" in volume:
                    # orchestrator/dashboard/tokens.py refuses a token file others may read; group bits
                    # only on a read-only mount (which the kubelet makes of every Secret volume)
                    assert not file.mode & 0o007 and mount.get("readOnly"), (where, name, mount)
            checked += 1
    if where != "v3 RayJob":
        assert checked, f"{where}: the dashboard's token Secret is mounted in no pod"


def test_orch_pods_run_as_the_image_user():
    """runAsUser/runAsGroup/fsGroup of every pod running the orch image are the Dockerfile's user and group:
    a Secret given to fsGroup G is readable only by a process in G."""
    uid, gid = image_user()
    for where, objects in rendered():
        for name, template in pod_templates(objects):
            pod = template["spec"]
            if not any(c["image"].split(":")[0] == "orch" for c in pod["containers"]):
                continue
            ctx = pod.get("securityContext", {})
            assert (ctx.get("runAsUser"), ctx.get("runAsGroup")) == (uid, gid), (where, name, ctx)
            if any(True for _ in mounted_files(pod)):
                assert ctx.get("fsGroup") == gid, (where, name, ctx)
