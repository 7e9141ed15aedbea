"""`orch up`, `orch down`, `orch cluster`: the embedded local cluster."""

from __future__ import annotations

import argparse

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.cluster.embedded import DEFAULT_LAYOUT, ClusterError
from orchestrator.control.client import ControlPlane


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the embedded local Ray cluster (a head and worker raylets) and the controller")
    p.add_argument("--layout", default=DEFAULT_LAYOUT, help=f"pool:kind:count,... (default {DEFAULT_LAYOUT})")
    p.add_argument("--devices-per-node", type=int, default=2, help="CPU worker slots per virtual node")
    p.add_argument(
        "--ha",
        action="store_true",
        help="GCS fault tolerance: back the head's GCS with a real redis-server, so the GCS or the head "
        "can be restarted while training goes on",
    )
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop the embedded cluster (jobs stay recorded)")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("cluster", help="show the embedded cluster")
    add_json_argument(p)
    p.set_defaults(func=cmd_cluster)


def cmd_up(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    info = plane.cluster.up(args.layout, args.devices_per_node, ha=args.ha)
    if args.ha and not info.redis_port:
        raise ClusterError(
            f"an embedded cluster without GCS fault tolerance already runs at {info.address}; "
            "stop it with 'orch down' (jobs stay recorded), then 'orch up --ha'"
        )
    plane.connect(start=False)
    print(f"embedded cluster up at {info.address} (ORCH_HOME {plane.home}): head + {len(info.nodes)} nodes")
    if info.redis_port:
        print(f"  GCS fault tolerance: Redis at 127.0.0.1:{info.redis_port} (namespace {info.storage_namespace})")
    for n in info.nodes:
        print(f"  {n.name}: pool {n.pool} ({n.kind}), {n.devices} devices")
    print("next: orch submit jobs/v3_pretrain.yaml --profile local")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = ControlPlane().cluster.down()
    print(f"embedded cluster stopped ({stopped} processes)" if stopped else "no embedded cluster was running")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    info = plane.cluster.running()
    if args.json:
        print_json(
            {
                "running": info is not None,
                "address": info.address if info else None,
                "nodes": [n.__dict__ for n in info.nodes] if info else [],
            }
        )
        return 0
    if info is None:
        print("the embedded cluster is not running; start it with: orch up")
        return 0
    print(f"embedded cluster at {info.address}, dashboard of Ray at 127.0.0.1:{info.dashboard_port}")
    for n in info.nodes:
        print(f"  {n.name}: pool {n.pool} ({n.kind}), {n.devices} devices")
    return 0
