"""Every Ray pod orch renders starts: KubeRay's `ray start` command line, built as KubeRay v1.7.0 builds
it (tests/helpers/kuberay_pod.py cites the source), run through a real /bin/bash -c with a stand-in
`ray` that records its argv: every flag must arrive as one argument, the resources JSON must parse,
and the Ray node labels must reach the raylet. Covers every group of the Kustomize base, both
overlays, the long-lived RayCluster and the V3 RayJob that `orch k8s render` writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache

import pytest
import yaml

from orchestrator.k8s.kustomize import build
from orchestrator.k8s.render import K8sSettings, cluster_manifest, job_manifests
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from tests.conftest import ROOT, V3_SPEC
from tests.helpers.kuberay_pod import KubeRayRefusal, quantity, ray_container_command

K8S = ROOT / "k8s"
RAY_FLAGS = {
    "head",
    "block",
    "address",
    "dashboard-host",
    "metrics-export-port",
    "dashboard-agent-listen-port",
    "num-cpus",
    "num-gpus",
    "memory",
    "resources",
    "labels",
    "labels-file",
}  # `ray start --help`, Ray 2.60


@lru_cache(maxsize=1)
def cluster_specs() -> dict[str, dict]:
    specs = {
        where: next(o for o in build(K8S / where) if o["kind"] == "RayCluster")["spec"]
        for where in ("base", "overlays/dev", "overlays/prod")
    }
    v3 = load_spec(str(V3_SPEC))
    specs["v3-rayjob"] = job_manifests(v3, make_plan(v3), "deepseek-v3-pretrain-0001", K8sSettings())[1]["spec"][
        "rayClusterSpec"
    ]
    rendered = subprocess.run(
        [sys.executable, "-m", "orchestrator", "k8s", "render", str(V3_SPEC), "--image", "orch"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    specs["v3-orch-k8s-render"] = list(yaml.safe_load_all(rendered.stdout))[1]["spec"]["rayClusterSpec"]
    spot = load_spec(
        str(V3_SPEC),
        None,
        [
            "resources.pools=[{name: gpu-on-demand, kind: on-demand, nodes: 128}, {name: gpu-spot, kind: spot, "
            "nodes: 128, price_per_gpu_hour: 0.9}, {name: gpu-spare, kind: spare, nodes: 4}]",
            "fault_tolerance.spare_nodes=4",
        ],
    )
    specs["spot-raycluster"] = cluster_manifest(spot, "orch", K8sSettings())["spec"]
    return specs


def groups():
    for where, spec in cluster_specs().items():
        yield pytest.param(spec["headGroupSpec"], True, id=f"{where}-head")
        for group in spec["workerGroupSpecs"]:
            yield pytest.param(group, False, id=f"{where}-{group['groupName']}")


def run_in_bash(command: list[str], tmp_path) -> list[str]:
    """Run KubeRay's container command with a `ray` on PATH that writes the argv it got."""
    fake = tmp_path / "bin" / "ray"
    fake.parent.mkdir()
    out = tmp_path / "argv.json"
    fake.write_text(f"#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "RAY_START_ULIMIT_OPEN_FILES": "1024"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("group, head", list(groups()))
def test_ray_start_parses_into_one_argument_per_flag(group, head, tmp_path):
    argv = run_in_bash(ray_container_command(group, head), tmp_path)
    assert argv[0] == "start"
    flags = {}
    for arg in argv[1:]:
        assert arg.startswith("--"), f"a flag split in two: {arg!r} in {argv}"
        key, _, value = arg[2:].partition("=")
        assert key in RAY_FLAGS, f"not a `ray start` flag: {arg!r}"
        flags[key] = value
    resources = json.loads(flags["resources"])  # the JSON arrives whole and parses
    container = group["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    assert flags["num-gpus"] == limits.get("nvidia.com/gpu", "0")
    if head:
        assert "head" in flags and flags["num-cpus"] == "0"  # nothing of the training lands on the head
        assert resources == {"orch_head": 1}
        assert flags["labels"] == "orch-node=head,orch-pool=control,orch-pool-kind=control"
    else:
        assert resources == {"orch_device": int(limits["nvidia.com/gpu"])}
        assert flags["labels-file"] == "/etc/orch/ray-labels.yaml" and flags["address"].endswith(":6379")
        assert int(flags["num-cpus"]) == quantity(limits["cpu"])
        assert int(flags["memory"]) == quantity(limits["memory"])


def test_the_broken_form_is_caught(tmp_path):
    """What orch rendered before: json.dumps unquoted; bash splits it at the space and eats the quotes."""
    group = cluster_specs()["base"]["workerGroupSpecs"][0]
    broken = {**group, "rayStartParams": {**group["rayStartParams"], "resources": json.dumps({"orch_device": 8})}}
    argv = run_in_bash(ray_container_command(broken, False), tmp_path)
    assert "--resources={orch_device:" in argv and "8}" in argv


def test_kuberay_refuses_labels_in_ray_start_params():
    head = cluster_specs()["base"]["headGroupSpec"]
    with pytest.raises(KubeRayRefusal, match="top-level Labels"):
        ray_container_command({**head, "rayStartParams": {**head["rayStartParams"], "labels": "a=b"}}, True)
