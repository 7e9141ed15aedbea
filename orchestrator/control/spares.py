"""Hot spares: keep the idle nodes each job asked for (``fault_tolerance.spare_nodes``) ready, so a
restart after a node loss takes a node that is already up instead of waiting for provisioning.

Idle means alive, not cordoned, held by no job, in a pool the job may use or in one of its spare
pools; nodes already being provisioned (a replacement on its way) count as coming. The shortfall is
asked of the node provider in the job's first spare pool. Pure: the controller applies the result.
"""

from __future__ import annotations

from orchestrator.control.scheduler import NodeView, usable
from orchestrator.control.states import HOLDING, JobState


def spare_shortfall(jobs: list[dict], nodes: list[NodeView], coming: dict[str, int]) -> dict[str, tuple[str, int]]:
    """pool -> (kind, nodes to provision). ``coming``: nodes being provisioned, by pool."""
    held = {name for j in jobs if JobState(j["state"]) in HOLDING for name in (j.get("assignment") or [])}
    wanted: dict[str, tuple[str, int]] = {}
    for job in jobs:
        if JobState(job["state"]).is_terminal:
            continue
        pools = job["spec"]["resources"]["pools"]
        target = job["spec"].get("fault_tolerance", {}).get("spare_nodes", 0)
        spare_pools = [p["name"] for p in pools if p.get("kind") == "spare"]
        if target <= 0 or not spare_pools:
            continue
        allowed = {p["name"] for p in pools}
        idle = sum(1 for n in nodes if n.pool in allowed and usable(n) and n.name not in held
                   and n.devices >= job["devices_per_node"])
        on_the_way = sum(coming.get(p, 0) for p in allowed)
        short = target - idle - on_the_way
        if short > 0:
            pool = spare_pools[0]
            kind, already = wanted.get(pool, ("spare", 0))
            wanted[pool] = (kind, max(already, short))
    return wanted
