"""`orch dashboard [--host 127.0.0.1] [--port 8265]`: serve the web dashboard."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from orchestrator.errors import OrchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the web dashboard (loopback only unless --host says otherwise)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8267)
    p.add_argument("--no-cluster", action="store_true", help="serve the state store only (no node pages or drill)")
    p.set_defaults(func=cmd_dashboard)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from orchestrator.cluster.provider import RayNodeProvider
    from orchestrator.control.client import ControlPlane, NotConnected
    from orchestrator.control.node_ops import ask_ray_runner
    from orchestrator.dashboard.app import DashboardContext, create_app
    from orchestrator.dashboard.tokens import ensure_tokens, load_tokens, tokens_path

    if not 0 < args.port < 65536:
        raise OrchError(f"--port {args.port} is not a TCP port; give 1-65535")
    plane = ControlPlane()
    path = tokens_path(plane.home)
    created = ensure_tokens(path)
    load_tokens(path)  # a malformed file is an error now, not at the first action
    provider = cluster = None
    if not args.no_cluster:
        try:
            plane.connect(start=False)
            provider, cluster = RayNodeProvider(plane.store), plane.cluster
        except NotConnected as exc:
            print(f"orch: {exc}; serving jobs, cost and events only", file=sys.stderr)
    app = create_app(DashboardContext(plane.store, provider, path, plane.home, cluster,
                                      ask_ray_runner if provider is not None else None))
    if not _loopback(args.host):
        print(f"orch: warning: serving on {args.host}: reachable from other machines (actions still need a token)",
              file=sys.stderr)
    print(f"orch dashboard: http://{args.host}:{args.port}/  (operator tokens: {path})", flush=True)
    if created:
        print(f"created an operator token for 'admin' in {path} (mode 0600)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
