"""`orch controller --address ADDR`: keep orch's controller running on a remote Ray cluster.

On Kubernetes this is the controller Deployment's process: it connects to the KubeRay head, starts
the detached controller actor if there is none (Ray restarts it if it crashes; this process restarts
it if it was deleted), and exits non-zero when the cluster is unreachable so Kubernetes restarts it.
"""

from __future__ import annotations

import argparse
import time

from orchestrator.errors import OrchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller", help="run orch's controller against a Ray cluster (the Kubernetes Deployment)")
    p.add_argument("--address", required=True, help="the Ray cluster, e.g. ray://orch-head-svc:10001")
    p.add_argument("--check-every", type=float, default=10.0)
    p.set_defaults(func=cmd_controller)


def cmd_controller(args: argparse.Namespace) -> int:
    import ray

    from orchestrator.control.client import ControlPlane
    from orchestrator.control.service import ensure_controller

    plane = ControlPlane(address=args.address)
    plane.connect(start=False)
    print(f"orch controller: connected to {args.address}; state store {plane.state_url.split('@')[-1]}", flush=True)
    while True:
        try:
            stats = ray.get(ensure_controller(plane.state_url, str(plane.home)).ping.remote(), timeout=60)
        except Exception as exc:  # unreachable cluster: exit so the Deployment restarts this pod
            raise OrchError(f"the controller did not answer: {exc}") from None
        if stats.get("errors"):
            print(f"orch controller: {stats['passes']} passes, {stats['errors']} failed: {stats['last_error']}",
                  flush=True)
        time.sleep(args.check_every)
