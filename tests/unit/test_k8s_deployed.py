"""What the deployed control plane does at start: `orch controller --provider kubernetes` runs the
Kubernetes notice path (watches + responder) in its process, and the controller and the dashboard
refuse placeholder secrets (k8s/base has no Secrets; an example value applied by mistake must not
become a working token)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

from orchestrator.cli.controller_command import start_notice_path
from orchestrator.clock import ManualClock
from orchestrator.placeholders import PlaceholderSecret, refuse_placeholders
from orchestrator.state.store import StateStore
from tests.helpers.k8s_replay import ReplayServer
from tests.unit.test_kubernetes_provider import EMPTY_NODES, OLD_EVENTS, recorded


def test_the_controller_process_runs_the_notice_path(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=ManualClock(1_800_000_000.0))
    tainted = recorded("watch_nodes.json")[0]
    args = argparse.Namespace(namespace="orch", ray_cluster="orch", cloud="aws")
    with ReplayServer() as api:
        api.on("GET", "/api/v1/nodes", stream=[tainted], query={"watch": "true"}, times=1)
        api.on("GET", "/api/v1/nodes", stream=[], query={"watch": "true"}, hold_s=5)
        api.on("GET", "/api/v1/events", stream=[], query={"watch": "true"}, hold_s=5)
        api.on("GET", "/api/v1/nodes", body=EMPTY_NODES)
        api.on("GET", "/api/v1/events", body=OLD_EVENTS)
        api.on("PATCH", "/api/v1/nodes/ip-10-0-2-21", body=tainted["object"])
        api.on("GET", "/api/v1/namespaces/orch/pods", body={"kind": "PodList", "metadata": {}, "items": []})
        watch = start_notice_path(api.api_client(), store, args, lambda *a: None)
        try:
            for _ in range(100):  # the daemon thread acts on its own
                if api.sent("PATCH", "/api/v1/nodes/ip-10-0-2-21"):
                    break
                time.sleep(0.05)
            assert api.sent("PATCH", "/api/v1/nodes/ip-10-0-2-21")[0].body == {"spec": {"unschedulable": True}}
        finally:
            watch.stop()
            for thread in watch.threads:
                thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in watch.threads)
    assert "ip-10-0-2-21" in store.cordoned_nodes()


def test_an_unknown_cloud_is_refused(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    with pytest.raises(Exception, match="--cloud mars: no notice window"):
        start_notice_path(None, store, argparse.Namespace(namespace="orch", ray_cluster="orch", cloud="mars"), None)


@pytest.mark.parametrize(
    "env, bad",
    [
        ({"RAY_AUTH_TOKEN": "REPLACE-with-output-of-openssl-rand-hex-32"}, "RAY_AUTH_TOKEN"),
        ({"RAY_AUTH_TOKEN": "short"}, "RAY_AUTH_TOKEN"),
        ({"ORCH_STATE_URL": "postgresql+psycopg://orch:REPLACE-postgres-password@db:5432/orch"}, "ORCH_STATE_URL"),
    ],
)
def test_placeholder_secrets_are_refused(env, bad):
    with pytest.raises(PlaceholderSecret, match=bad):
        refuse_placeholders(env)


def test_real_secrets_pass(tmp_path):
    refuse_placeholders(
        {"RAY_AUTH_TOKEN": "9f" * 32, "ORCH_STATE_URL": "postgresql+psycopg://orch:s3cr3t-9f2a@db/orch"}
    )
    refuse_placeholders({"ORCH_STATE_URL": f"sqlite:///{tmp_path}/example/state.db"})  # no password: nothing to check


def test_the_controller_refuses_a_placeholder_token_at_start(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "controller", "--address", "ray://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORCH_HOME": str(tmp_path), "RAY_AUTH_TOKEN": "REPLACE-me-with-a-token"},
    )
    assert out.returncode == 2 and "RAY_AUTH_TOKEN still holds a placeholder" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_in_process_controller_refuses_the_kubernetes_provider(tmp_path):
    """The notice path runs only beside the actor controller: the combination would drop spot notices."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "controller",
            "--address",
            "ray://127.0.0.1:1",
            "--in-process",
            "--provider",
            "kubernetes",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORCH_HOME": str(tmp_path)},
    )
    assert out.returncode == 2 and "--in-process with --provider kubernetes" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "state.db").exists()


def test_the_dashboard_refuses_placeholder_tokens_at_start(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# NAME TOKEN per line\nadmin REPLACE-with-output-of-openssl-rand-hex-32\n")
    tokens.chmod(0o600)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dashboard", "--no-cluster", "--port", "8299"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORCH_HOME": str(tmp_path), "ORCH_DASHBOARD_TOKENS": str(tokens)},
    )
    assert out.returncode == 2 and f"{tokens}:2 still holds a placeholder" in out.stderr


def test_every_orch_container_command_parses():
    """The args the Deployments and init containers give `orch` are ones its CLI accepts (drift between
    k8s/base and the CLI would crash-loop the pod)."""
    from orchestrator.cli.main import build_parser
    from orchestrator.k8s.kustomize import build
    from tests.conftest import ROOT

    parser = build_parser()
    objects = build(ROOT / "k8s" / "overlays" / "prod")
    seen = []
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["image"] == "orch":
                args = parser.parse_args(container["args"])
                seen.append(container["args"][0])
                if container["args"][0] == "controller":
                    assert args.provider == "kubernetes" and args.namespace == "orch"
    assert sorted(seen) == ["controller", "dashboard", "metrics"]
