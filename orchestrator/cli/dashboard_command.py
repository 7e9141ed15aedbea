"""`orch dashboard [--host 127.0.0.1] [--port 8265]`: serve the web dashboard."""

from __future__ import annotations

import argparse
import os
import sys

from orchestrator.cluster.provider import RayNodeProvider
from orchestrator.control.client import ControlPlane, NotConnected
from orchestrator.control.node_ops import ask_ray_runner
from orchestrator.dashboard.tokens import ensure_tokens, load_tokens, tokens_path
from orchestrator.errors import OrchError
from orchestrator.placeholders import refuse_placeholders


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the web dashboard (loopback only unless --host says otherwise)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8267, help="port to listen on")
    p.add_argument("--no-cluster", action="store_true", help="serve the state store only (no node pages or drill)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name browsers use to reach this dashboard (repeatable; loopback names are always "
        "allowed; also ORCH_DASHBOARD_HOSTS, comma-separated)",
    )
    p.add_argument(
        "--public-url",
        metavar="URL",
        default=os.environ.get("ORCH_DASHBOARD_PUBLIC_URL"),
        help="the origin browsers use, e.g. https://orch.example.com behind a TLS ingress "
        "(actions must come from it; its host is allowed)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a reverse proxy's address whose X-Forwarded-Host/-Proto are believed for the Origin check",
    )
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from orchestrator.dashboard.app import DashboardContext, create_app
    from orchestrator.dashboard.context import is_loopback

    if not 0 < args.port < 65536:
        raise OrchError(f"--port {args.port} is not a TCP port; give 1-65535")

    plane = ControlPlane()
    path = tokens_path(plane.home)
    refuse_placeholders(files=(path,))
    created = ensure_tokens(path)
    load_tokens(path)  # a malformed file is an error now, not at the first action
    provider = cluster = None
    if not args.no_cluster:
        try:
            plane.connect(start=False)
            provider, cluster = RayNodeProvider(plane.store), plane.cluster
        except NotConnected as exc:
            print(f"orch: {exc}; serving jobs, cost and events only", file=sys.stderr)
    hosts = [*args.allow_host, *filter(None, os.environ.get("ORCH_DASHBOARD_HOSTS", "").split(","))]
    ctx = DashboardContext(
        plane.store,
        provider,
        path,
        plane.home,
        cluster,
        ask_ray_runner if provider is not None else None,
        allowed_hosts=tuple(hosts),
        public_url=args.public_url,
        trusted_proxies=tuple(args.trusted_proxy),
        read_token_required=not is_loopback(args.host),
    )
    app = create_app(ctx)
    if not is_loopback(args.host):
        print(
            f"orch: serving on {args.host}: reachable from other machines; reads and actions need a token; "
            f"Host names accepted: {', '.join(ctx.allowed_hosts)}",
            file=sys.stderr,
        )
    print(f"orch dashboard: http://{args.host}:{args.port}/  (operator tokens: {path})", flush=True)
    if created:
        print(f"created an operator token for 'admin' in {path} (mode 0600)", flush=True)
    # proxy_headers off: X-Forwarded-* are believed only from --trusted-proxy addresses, by the gate itself
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False, server_header=False)
    return 0
