"""A job submitted with --target k8s is run by its RayJob only: `orch submit --target k8s` records the
row as the Kubernetes control plane's (Owner.KUBERNETES), and a Ray controller sharing the state store
never starts it (it would train it a second time into the same checkpoint prefix, outside the ledger),
while it does start a Ray-owned job of the same spec on the same nodes."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestrator.cluster.kubernetes import KubernetesNodeProvider
from orchestrator.control.client import ControlPlane
from orchestrator.control.controller import ControllerCore
from orchestrator.lifecycle import JobState, Owner
from orchestrator.state.store import EventRecord
from tests.conftest import ROOT
from tests.helpers.k8s_replay import ReplayServer
from tests.unit.test_k8s import IMAGE, kubeconfig
from tests.unit.test_kubernetes_provider import RAY_CLUSTER, RC_PATH, recorded

SPEC = ROOT / "k8s" / "cluster-spec.yaml"  # 2 nodes: one on demand, one spot


class RecordingLauncher:
    """Stands in for the Ray runner actors: records which jobs the controller starts."""

    def __init__(self):
        self.started: list[str] = []

    def prepare(self):
        pass

    def start(self, job, attempt):
        self.started.append(job.id)

    def status(self, job):
        return None

    def request(self, job, directive, deadline=None):
        pass

    def release(self, job):
        pass

    def forget(self, job):
        pass


def test_a_k8s_job_is_left_to_its_rayjob(tmp_path, monkeypatch):
    home = tmp_path / "home"
    with ReplayServer() as api:
        api.on("POST", "/api/v1/namespaces/orch/configmaps", status=201, body={"kind": "ConfigMap"})
        api.on("POST", "/apis/ray.io/v1/namespaces/orch/rayjobs", status=201, body={"kind": "RayJob"})
        api.on("GET", "/api/v1/nodes", body=recorded("nodes.json"))
        api.on("GET", "/api/v1/namespaces/orch/pods", body={"kind": "PodList", "metadata": {}, "items": []})
        api.on("GET", RC_PATH, body=RAY_CLUSTER)
        api.on("PATCH", RC_PATH, body=RAY_CLUSTER)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "submit",
                str(SPEC),
                "--target",
                "k8s",
                "--kubeconfig",
                str(kubeconfig(tmp_path, api.url)),
                "--image",
                IMAGE,
                "--detach",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "ORCH_HOME": str(home)},
        )
        assert out.returncode == 0, out.stderr
        monkeypatch.setenv("ORCH_HOME", str(home))
        plane = ControlPlane()
        k8s_job = plane.store.jobs()[0]
        assert plane.store.job_owner(k8s_job.id) == Owner.KUBERNETES
        launcher = RecordingLauncher()
        core = ControllerCore(plane.store, KubernetesNodeProvider(api.api_client(), plane.store), launcher)
        core.reconcile()
        assert launcher.started == [] and plane.store.jobs()[0].state is JobState.QUEUED
        _, row = plane.prepare(str(SPEC), None, [])  # the same spec, submitted to the Ray control plane
        ray_job = plane.store.insert_job(row, [EventRecord("job.submitted", "ray")], owner=Owner.RAY)
        core.reconcile()
    assert launcher.started == [ray_job]  # the Ray job is placed on those nodes; the RayJob's row still is not
    assert plane.store.job_owner(k8s_job.id) == Owner.KUBERNETES
    assert next(j for j in plane.store.jobs() if j.id == k8s_job.id).state is JobState.QUEUED
