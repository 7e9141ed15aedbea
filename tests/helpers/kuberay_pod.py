"""KubeRay's Ray container command, reproduced from its source so a test can run it through a real shell.

Followed line by line: ray-project/kuberay tag v1.7.0 (the version of the vendored CRDs in
orchestrator/k8s/crds/ and of the Helm chart terraform/helm.tf installs):

- ``ray-operator/controllers/ray/common/pod.go``:
  ``DefaultHeadPodTemplate``/``DefaultWorkerPodTemplate`` call ``updateRayStartParamsResources`` and
  ``updateRayStartParamsLabels`` (group ``resources``/``labels`` fields -> rayStartParams), then
  ``setMissingRayStartParams`` (worker ``address``, head ``dashboard-host``, ``metrics-export-port``
  8080, ``block`` "true", ``dashboard-agent-listen-port`` 52365); ``BuildPod`` ->
  ``generateRayStartCommand`` (``num-cpus`` from the CPU limit, else request, as an integer rounded
  up; ``memory`` from the memory limit in bytes; ``num-gpus`` from the first GPU resource limit) ->
  ``convertParamMap`` (keys sorted; a value "true"/"false" becomes a bare ``--key`` or nothing,
  except log-color, include-dashboard, include-log-monitor; otherwise `` --key=value ``); the
  container's command becomes ``["/bin/bash", "-c", "--"]`` (``utils.GetContainerCommand``) and its
  single argument ``ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; ray start ...``.
- ``ray-operator/controllers/ray/utils/validation.go``: ``validateRayGroupLabels`` refuses
  ``rayStartParams['labels']``; ``validateRayGroupResources`` refuses resources both in
  rayStartParams and the group's ``resources`` field; ``ValidateRayClusterSpec`` wants both
  ``minReplicas`` and ``maxReplicas`` (autoscaling off), non-negative, min <= max.
"""

from __future__ import annotations

import math
import re

DEFAULT_METRICS_PORT, DEFAULT_DASHBOARD_AGENT_LISTEN_PORT = 8080, 52365
BOOLEAN_VALUED = ("log-color", "include-dashboard", "include-log-monitor")
GPU_KEY = re.compile(r".*/gpu$")  # utils.IsGPUResourceKey: nvidia.com/gpu, amd.com/gpu, ...
SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 10**-3,
    "": 1,
}


class KubeRayRefusal(ValueError):
    """What KubeRay's validation would refuse (the RayCluster would never get pods)."""


def quantity(text: str) -> float:
    """A Kubernetes resource quantity (the forms orch uses) as a number."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    if not match or match.group(2) not in SUFFIX:
        raise ValueError(f"not a quantity orch uses: {text!r}")
    return float(match.group(1)) * SUFFIX[match.group(2)]


def validate_group(name: str, group: dict) -> None:
    params, labels, resources = group.get("rayStartParams") or {}, group.get("labels"), group.get("resources")
    if "labels" in params:
        raise KubeRayRefusal(
            f"rayStartParams['labels'] is not supported for {name} group; please use the top-level Labels field instead"
        )
    if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and resources:
        raise KubeRayRefusal(f"resource fields should not be set in both rayStartParams and Resources for {name}")
    del labels
    if name != "Head":  # validation.go: autoscaling is off, so both bounds are required, >= 0, min <= max
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if low is None or high is None:
            raise KubeRayRefusal(f"worker group {name} must set both minReplicas and maxReplicas")
        if low < 0 or high < 0 or low > high:
            raise KubeRayRefusal(f"worker group {name}: minReplicas {low}, maxReplicas {high}")


def _group_fields(params: dict, group: dict) -> None:
    if group.get("resources"):
        raise NotImplementedError("updateRayStartParamsResources is not reproduced: orch does not use group resources")
    if group.get("labels"):
        params["labels"] = ",".join(f"{k}={v}" for k, v in sorted(group["labels"].items()))


def _set_missing(params: dict, head: bool, head_address: str) -> None:
    if not head:
        params.setdefault("address", head_address)
    else:
        params.setdefault("dashboard-host", "0.0.0.0")
    params.setdefault("metrics-export-port", str(DEFAULT_METRICS_PORT))
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", str(DEFAULT_DASHBOARD_AGENT_LISTEN_PORT))


def _from_resources(params: dict, container: dict) -> None:
    limits = (container.get("resources") or {}).get("limits") or {}
    requests = (container.get("resources") or {}).get("requests") or {}
    cpu = limits.get("cpu") or requests.get("cpu")
    if "num-cpus" not in params and cpu:
        params["num-cpus"] = str(math.ceil(quantity(cpu)))  # resource.Quantity.Value() rounds up
    if "memory" not in params and limits.get("memory"):
        params["memory"] = str(math.ceil(quantity(limits["memory"])))
    for key in sorted(limits):
        if "num-gpus" not in params and GPU_KEY.fullmatch(key) and quantity(limits[key]):
            params["num-gpus"] = str(math.ceil(quantity(limits[key])))


def convert_param_map(params: dict) -> str:
    flags = ""
    for option in sorted(params):
        argument = params[option]
        if argument.lower() in ("true", "false") and option not in BOOLEAN_VALUED:
            if argument.lower() == "true":
                flags += f" --{option} "
        else:
            flags += f" --{option}={argument} "
    return flags


def ray_container_command(
    group: dict, head: bool, head_address: str = "orch-head-svc.orch.svc.cluster.local:6379"
) -> list[str]:
    """The Ray container's command and args as KubeRay v1.7.0 sets them for this head or worker group."""
    validate_group("Head" if head else group.get("groupName", "?"), group)
    params = {k: str(v) for k, v in (group.get("rayStartParams") or {}).items()}
    _group_fields(params, group)
    _set_missing(params, head, head_address)
    container = group["template"]["spec"]["containers"][0]
    _from_resources(params, container)
    start = ("ray start --head " if head else "ray start ") + convert_param_map(params)
    return ["/bin/bash", "-c", "--", "ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; " + start]
