"""Node operations shared by `orch nodes` and the dashboard: list, cordon, uncordon, drain, and
the preemption drill. Each records an event naming who asked (``actor``).

Cordon keeps new gangs off a node (the scheduler skips it); drain also moves work off it: the jobs
holding it checkpoint, stop and are requeued elsewhere. The drill takes a node of the embedded
cluster away as a spot reclaim would: with a notice, the jobs on it are told to checkpoint within
the notice first; then its raylet is killed; ``replace`` starts a new raylet with the same labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.cluster.provider import NodeProvider
from orchestrator.control.notices import handle_notice
from orchestrator.errors import OrchError
from orchestrator.paths import runner_name
from orchestrator.state.store import StateStore

NODE_ACTIONS = ("cordon", "uncordon", "drain")


class UnknownNode(OrchError):
    pass


def node_rows(store: StateStore, provider: NodeProvider) -> list[dict]:
    """Every node with its pool, devices used and free, health, cordon and the jobs on it
    (the rows of `orch nodes list --json` and `/api/nodes`)."""
    holders: dict[str, list[dict]] = {}
    for job in store.holding_jobs():
        for name in job["assignment"] or []:
            holders.setdefault(name, []).append(job)
    cordons = store.cordoned_nodes()
    rows = []
    for node in provider.nodes():
        jobs = holders.get(node.name, [])
        used = sum(j["devices_per_node"] for j in jobs)
        rows.append(
            {
                "name": node.name,
                "pool": node.pool,
                "kind": node.pool_kind,
                "devices": node.devices,
                "used": used,
                "free": max(0, node.devices - used) if node.alive else 0,
                "health": "alive" if node.alive else "dead",
                "cordoned": node.cordoned,
                "cordon_reason": cordons.get(node.name),
                "jobs": [j["id"] for j in jobs],
            }
        )
    return rows


def check_known(provider: NodeProvider, node: str) -> None:
    if node not in {n.name for n in provider.nodes()}:
        raise UnknownNode(f"no node '{node}'; see 'orch nodes list'")


def set_node(store: StateStore, provider: NodeProvider, node: str, action: str, reason: str, actor: str) -> list[str]:
    """Cordon, uncordon or drain ``node``; what was done, a line each."""
    if action not in NODE_ACTIONS:
        raise OrchError(f"unknown node action '{action}'; use one of {', '.join(NODE_ACTIONS)}")
    check_known(provider, node)
    store.set_cordon(node, action != "uncordon", f"{action}: {reason}", actor)
    done = []
    if action == "drain":
        for job in store.holding_jobs(node):
            store.request_preempt(job["id"], f"node {node} drained", actor, data={"node": node})
            done.append(f"{job['id']}: checkpointing and moving off {node}")
    done.append(f"{node}: cordoned and draining" if action == "drain" else f"{node}: {action}ed")
    return done


def preempt_drill(
    store: StateStore,
    provider: NodeProvider,
    cluster,
    node: str,
    notice: float,
    replace: bool,
    actor: str,
    ask_runner: Callable[[dict, str, float], None],
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Take ``node`` away like a spot reclaim: notice (the jobs on it checkpoint by the deadline), kill
    its raylet, optionally start a replacement. ``ask_runner(job, directive, deadline)`` reaches the
    attempt's runner."""
    check_known(provider, node)
    store.add_event(
        "node.preempt",
        f"{node}: preemption drill" + (f" with {notice:.0f} s notice" if notice else " without notice"),
        data={"node": node, "notice_s": notice},
        actor=actor,
    )
    done = []
    if notice > 0:
        deadline = time.time() + notice
        done += handle_notice(store, node, deadline, "preemption drill", actor, ask_runner)
        sleep(max(0.0, deadline - time.time()))
    killed, killed_at = cluster.kill_node(node)
    store.add_event(
        "node.lost",
        f"{node}: raylet killed ({killed} processes)",
        data={"node": node, "killed_at": killed_at},  # (the event itself is written once they have exited)
        actor=actor,
    )
    done.append(f"{node}: gone ({killed} processes killed)")
    if replace:
        cluster.start_node(node)
        store.set_cordon(node, False, "replaced: a new node under the same name", actor)
        store.add_event("node.replaced", f"{node}: replacement raylet started", data={"node": node}, actor=actor)
        done.append(f"{node}: replacement started with the same labels")
    return done


def ask_ray_runner(job: dict, directive: str, deadline: float | None) -> None:
    """Send a directive to the job attempt's runner actor, if it is alive."""
    import ray

    try:
        runner = ray.get_actor(runner_name(job["id"], job["attempt"]), namespace="orch")
    except ValueError:
        return
    runner.request.remote(directive, deadline)
