"""The dashboard behind its Ingress answers: the rendered Deployment gives `orch dashboard` the public URL
whose host the Ingress serves, and the dashboard's own gate (orchestrator/dashboard/security.py) lets that
Host in, takes actions from that origin and still refuses any other Host with 421.

ingress-nginx forwards the client's Host header unchanged (``proxy_set_header Host $best_http_host`` in
kubernetes/ingress-nginx ``rootfs/etc/nginx/template/nginx.tmpl``), so the Host the dashboard sees is the
Ingress rule's host. The pod's environment is resolved as the kubelet would (tests/helpers/k8s_pods.py):
literal values, ConfigMap keys from the rendered objects, and stand-ins for the Secrets made outside Git.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator.k8s.kustomize import build
from tests.conftest import ROOT
from tests.helpers.dashboard_server import free_port, wait_until_serving
from tests.helpers.k8s_pods import container_env

WHERE = ["base", "overlays/dev", "overlays/prod"]
OPERATOR, READER = "op-" + "7" * 32, "rd-" + "5" * 32


def dashboard_pod(objects: list[dict]) -> tuple[dict, dict]:
    """(the Ingress in front of the dashboard, the dashboard container)."""
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orch-dashboard")
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["args"][0] == "dashboard")
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "orch-dashboard")
    ingresses = [
        o
        for o in objects
        if o["kind"] == "Ingress"
        if any(
            p["backend"]["service"]["name"] == service["metadata"]["name"]
            for r in o["spec"]["rules"]
            for p in r["http"]["paths"]
        )
    ]
    assert len(ingresses) == 1, "one Ingress routes to the dashboard Service"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for rule in ingresses[0]["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            port = ports[path["backend"]["service"]["port"]["name"]]
            assert port["targetPort"] in [p["name"] for p in container["ports"]]
    return ingresses[0], container


def ingress_hosts(ingress: dict) -> set[str]:
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    tls = {host for entry in ingress["spec"].get("tls", []) for host in entry["hosts"]}
    assert hosts == tls, f"every Ingress host is served over TLS (rules {hosts}, tls {tls})"
    return hosts


def dashboard_environment(objects, container, tmp_path: Path) -> dict[str, str]:
    """The container's environment, with this machine's stand-ins for the cluster's paths and Secrets."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin {OPERATOR}\nviewer {READER} reader\n")
    tokens.chmod(0o600)
    secrets = {
        ("orch-ray-auth", "auth_token"): "9f" * 32,
        ("orch-postgres", "url"): f"sqlite:///{tmp_path / 'state.db'}",
    }
    env = container_env(container, objects, secrets)
    assert env.pop("ORCH_DASHBOARD_TOKENS") == "/etc/orch/dashboard/tokens"
    env.pop("RAY_ADDRESS")  # no Ray head here: the dashboard serves the state store (--no-cluster)
    return {**env, "ORCH_HOME": str(tmp_path / "home"), "ORCH_DASHBOARD_TOKENS": str(tokens)}


def gate_status(ctx, host: str, method: str = "GET", origin: str | None = None) -> int:
    """What the dashboard's gate does with a request: 200 when it lets it through, else its refusal."""
    from orchestrator.dashboard.security import Guard, Refused

    headers = [
        (b"host", host.encode()),
        (b"authorization", f"Bearer {OPERATOR}".encode()),
        (b"content-type", b"application/json"),
    ] + ([(b"origin", origin.encode())] if origin else [])
    scope = {
        "type": "http",
        "method": method,
        "path": "/api/jobs",
        "headers": headers,
        "scheme": "http",
        "client": ("10.0.0.9", 41234),
    }
    try:
        Guard(None, ctx).admit(scope)
    except Refused as exc:
        return exc.status_code
    return 200


@pytest.mark.parametrize("where", WHERE)
def test_the_ingress_host_passes_the_dashboards_host_check(where, tmp_path, monkeypatch):
    """The container's args and environment, parsed by orch's own CLI and made into the dashboard's
    context as `orch dashboard` makes it, admit the Ingress host and its HTTPS origin."""
    from orchestrator.cli.main import build_parser
    from orchestrator.dashboard.context import DashboardContext, is_loopback
    from orchestrator.state.store import StateStore

    objects = build(ROOT / "k8s" / where)
    ingress, container = dashboard_pod(objects)
    for name, value in dashboard_environment(objects, container, tmp_path).items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(container["args"])  # --public-url defaults to ORCH_DASHBOARD_PUBLIC_URL
    hosts = [*args.allow_host, *filter(None, os.environ.get("ORCH_DASHBOARD_HOSTS", "").split(","))]
    ctx = DashboardContext(
        StateStore(os.environ["ORCH_STATE_URL"]),
        None,
        Path(os.environ["ORCH_DASHBOARD_TOKENS"]),
        tmp_path,
        allowed_hosts=tuple(hosts),
        public_url=args.public_url,
        trusted_proxies=tuple(args.trusted_proxy),
        read_token_required=not is_loopback(args.host),
    )
    for host in ingress_hosts(ingress):
        assert gate_status(ctx, host) == 200, f"{where}: the dashboard refuses its Ingress host {host}"
        assert gate_status(ctx, f"{host}:443") == 200
        assert gate_status(ctx, host, "POST", origin=f"https://{host}") == 200  # an action from the page
        assert gate_status(ctx, host, "POST", origin=f"http://{host}") == 403  # not the TLS origin
    assert gate_status(ctx, "evil.example") == 421  # the gate is still on


def overlay_with_url(tmp_path: Path, url: str) -> Path:
    """A copy of the prod overlay whose only change is the public URL an operator sets."""
    config = yaml.safe_load((ROOT / "k8s" / "overlays" / "prod" / "kustomization.yaml").read_text())
    config["resources"] = [str(ROOT / "k8s" / "base")]
    (patch,) = [p for p in config["patches"] if p["target"]["kind"] == "ConfigMap"]
    patch["patch"] = yaml.safe_dump([{"op": "replace", "path": "/data/public_url", "value": url}])
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(config))
    return overlay


def test_the_ingress_follows_the_public_url_set_in_the_overlay(tmp_path):
    ingress, container = dashboard_pod(build(overlay_with_url(tmp_path, "https://orch.corp.internal")))
    assert ingress_hosts(ingress) == {"orch.corp.internal"}


@pytest.mark.slow
def test_orch_dashboard_started_as_the_pod_starts_it_answers_through_the_ingress(tmp_path):
    """The real `orch dashboard` process, with the rendered container's args and environment (a public
    URL set in the overlay), answers requests carrying the Ingress host: reads with a token, actions
    from the HTTPS origin; another Host still gets 421."""
    objects = build(overlay_with_url(tmp_path, "https://orch.corp.internal"))
    ingress, container = dashboard_pod(objects)
    (host,) = ingress_hosts(ingress)
    args = list(container["args"])
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    env = {**os.environ, **dashboard_environment(objects, container, tmp_path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args, "--no-cluster"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, server)
        read = httpx.get(base + "/api/jobs", headers={"Host": host, "Authorization": f"Bearer {READER}"}, timeout=10)
        assert read.status_code == 200 and read.json() == []
        action = httpx.post(
            base + "/api/jobs/no-such-job/cancel",
            content=b"{}",
            timeout=10,
            headers={
                "Host": host,
                "Origin": f"https://{host}",
                "Content-Type": "application/json",
                "Authorization": f"Bearer {OPERATOR}",
            },
        )
        assert action.status_code == 404, action.text  # through the gate, to the route: no such job
        evil = httpx.get(base + "/api/jobs", headers={"Host": "evil.example", "Authorization": f"Bearer {READER}"})
        assert evil.status_code == 421
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert "Host names accepted: " in out and host in out


SOURCE = {"kind": "ConfigMap", "name": "orch-dashboard", "fieldPath": "data.public_url"}
INGRESS = {"kind": "Ingress", "name": "orch-dashboard"}


@pytest.mark.parametrize(
    "replacement, error",
    [
        (
            {
                "source": {**SOURCE, "name": "nope"},
                "targets": [{"select": INGRESS, "fieldPaths": ["spec.rules.0.host"]}],
            },
            "must match one object",
        ),
        (
            {"source": SOURCE, "targets": [{"select": INGRESS, "fieldPaths": ["spec.rules.0.hostname"]}]},
            "hostname is missing",
        ),
    ],
)
def test_a_replacement_that_points_nowhere_is_refused(tmp_path, replacement, error):
    """kustomize fails a build whose replacement names no source or a missing target field; so does orch's subset
    (a silently skipped replacement would leave the Ingress on the example host)."""
    from orchestrator.k8s.kustomize import KustomizeError

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [str(ROOT / "k8s" / "base")], "replacements": [replacement]})
    )
    with pytest.raises(KustomizeError, match=error):
        build(overlay)
