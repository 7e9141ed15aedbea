"""`orch controller --address ADDR`: keep orch's controller running on a remote Ray cluster.

On Kubernetes this is the controller Deployment's process: it connects to the KubeRay head, starts
the detached controller actor if there is none (Ray restarts it if it crashes; this process restarts
it if it was deleted), and exits non-zero when the cluster is unreachable so Kubernetes restarts it.
With ``--provider kubernetes`` it also runs the notice path: node and node-event watches (both at
once) feed the Kubernetes responder, which checkpoints the jobs on a node that is going away, then
cordons, drains and replaces it (orchestrator/control/k8s_notices.py), and it follows the RayJobs of
`orch submit --target k8s` in its namespace, detached ones too, moving their rows and closing their
attempts into the ledger when they end (orchestrator/k8s/submit.py, ``follow_namespace``).

With ``--in-process`` the controller runs in this process instead, away from the head: replicas
elect one leader through the state store (the others wait) and reconnect after the head returns
(``orchestrator.control.standalone``).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from orchestrator.cluster.embedded import EmbeddedCluster
from orchestrator.cluster.k8s_watch import SignalWatch
from orchestrator.cluster.kubernetes import KubernetesNodeProvider
from orchestrator.cluster.notices import notice_windows
from orchestrator.control.client import ControlPlane
from orchestrator.control.k8s_notices import NoticeResponder, run_notice_loop
from orchestrator.control.node_ops import ask_ray_runner
from orchestrator.control.standalone import run_in_process
from orchestrator.errors import OrchError
from orchestrator.k8s.submit import follow_namespace
from orchestrator.paths import default_state_url, orch_home
from orchestrator.placeholders import refuse_placeholders
from orchestrator.state.engine import redact


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller", help="run orch's controller against a Ray cluster (the Kubernetes Deployment)")
    p.add_argument("--address", required=True, help="the Ray cluster, e.g. ray://orch-head-svc:10001")
    p.add_argument(
        "--check-every",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between checks that the controller actor is alive",
    )
    p.add_argument(
        "--provider",
        choices=("ray", "kubernetes"),
        default="ray",
        help="kubernetes: also watch the nodes for interruption notices (in the cluster)",
    )
    p.add_argument("--namespace", default="orch", help="the namespace of orch's Ray pods (--provider kubernetes)")
    p.add_argument("--ray-cluster", default="orch", help="the RayCluster whose workers are replaced")
    p.add_argument(
        "--cloud", default="aws", help="whose notice signals to watch (orchestrator/cluster/notice_windows.yaml)"
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the controller here (leader-elected through the state store) instead of as a Ray actor",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=15.0,
        help="seconds a leader's lease lasts without renewal (a standby takes over after it)",
    )
    p.set_defaults(func=cmd_controller)


def start_notice_path(api_client, store, args: argparse.Namespace, ask_runner):
    """The Kubernetes provider's watches and responder, in a daemon thread; the watch (``stop()`` ends it)."""
    if args.cloud not in notice_windows():
        raise OrchError(f"--cloud {args.cloud}: no notice window; known: {', '.join(notice_windows())}")
    notices = notice_windows()[args.cloud]
    provider = KubernetesNodeProvider(api_client, store, args.namespace, args.ray_cluster)
    watch = SignalWatch(api_client, notices, on_error=lambda m: print(f"orch controller: {m}", flush=True)).start()
    respond = NoticeResponder(provider, notices, ask_runner)
    thread = threading.Thread(target=run_notice_loop, args=(watch, respond), name="orch-notices", daemon=True)
    thread.start()
    return watch


def cmd_controller(args: argparse.Namespace) -> int:
    if args.lease_ttl <= 0 or args.check_every <= 0:
        raise OrchError(
            f"--lease-ttl and --check-every must be positive (got {args.lease_ttl}, "
            f"{args.check_every}); e.g. --lease-ttl 15"
        )
    if args.in_process and args.provider == "kubernetes":
        # the notice path (node watches, responder) runs only beside the controller actor: an
        # in-process controller would silently leave spot notices unanswered
        raise OrchError(
            "--in-process with --provider kubernetes: the in-process controller does not run the "
            "Kubernetes notice path; drop --in-process (the Deployment runs the controller actor "
            "and the watches) or use --provider ray"
        )
    refuse_placeholders()
    if args.in_process:
        home = orch_home()
        info = EmbeddedCluster(home).load()
        if info is not None:  # orch's own local cluster: its token auth, set before Ray is imported
            os.environ.update(EmbeddedCluster(home).env(info))
        run_in_process(
            args.address,
            default_state_url(),
            home,
            ttl_s=args.lease_ttl,
            check_every=min(args.check_every, 2.0),
            report=lambda m: print(m, flush=True),
        )
        return 0
    import ray

    from orchestrator.control.service import ensure_controller  # a Ray actor: importing it imports Ray

    plane = ControlPlane(address=args.address)
    plane.connect(start=False)
    print(f"orch controller: connected to {args.address}; state store {redact(plane.state_url)}", flush=True)
    api = None
    if args.provider == "kubernetes":
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.ApiClient()
        start_notice_path(api, plane.store, args, ask_ray_runner)
        print(f"orch controller: watching nodes for {args.cloud} notices", flush=True)
    while True:
        if api is not None:  # RayJobs of `orch submit --target k8s`, detached ones too: they end in the ledger
            follow_namespace(api, plane.store, args.namespace, log=lambda m: print(m, flush=True))
        try:
            stats = ray.get(ensure_controller(plane.state_url, str(plane.home)).ping.remote(), timeout=60)
        except Exception as exc:  # unreachable cluster: exit so the Deployment restarts this pod
            raise OrchError(f"the controller did not answer: {exc}") from None
        if stats.get("errors"):
            print(
                f"orch controller: {stats['passes']} passes, {stats['errors']} failed: {stats['last_error']}",
                flush=True,
            )
        time.sleep(args.check_every)
