"""Hot spares: keep the idle nodes each job asked for (``fault_tolerance.spare_nodes``) ready, so a
restart after a node loss takes a node that is already up instead of waiting for provisioning, and
retire the ones no job needs any more, so they stop being paid for.

Idle means alive, not cordoned, held by no job, in a pool the job may use or in one of its spare
pools; nodes already being provisioned (a replacement on its way) count as coming. The shortfall is
asked of the node provider in the job's first spare pool. A surplus arises when the reason for a new
spare goes away: the cordon on the only spare lifts, or a lost node comes back. Only nodes orch
itself added to a spare pool are ever retired (never below the pool's size as the operator made it),
never a cordoned one, and nothing while a job that lists the pool waits to be placed.
Pure: the controller applies the result.
"""

from __future__ import annotations

import re

from orchestrator.cluster.placement import NodeView, usable
from orchestrator.lifecycle import HOLDING
from orchestrator.state.records import JobRecord


def _held(jobs: list[JobRecord]) -> set[str]:
    return {name for j in jobs if j.state in HOLDING for name in (j.assignment or [])}


def _wants_spares(job: JobRecord) -> bool:
    return (
        not job.state.is_terminal
        and job.spec.fault_tolerance.spare_nodes > 0
        and any(p.kind == "spare" for p in job.spec.resources.pools)
    )


def _idle_for(job: JobRecord, nodes: list[NodeView], held: set[str], coming: dict[str, int]) -> int:
    """Idle nodes the job could restart on, plus those on their way to its pools."""
    allowed = {p.name for p in job.spec.resources.pools}
    idle = sum(
        1 for n in nodes if n.pool in allowed and usable(n) and n.name not in held and n.devices >= job.devices_per_node
    )
    return idle + sum(coming.get(p, 0) for p in allowed)


def spare_shortfall(jobs: list[JobRecord], nodes: list[NodeView], coming: dict[str, int]) -> dict[str, tuple[str, int]]:
    """pool -> (kind, nodes to provision). ``coming``: nodes being provisioned, by pool."""
    held = _held(jobs)
    wanted: dict[str, tuple[str, int]] = {}
    for job in filter(_wants_spares, jobs):
        short = job.spec.fault_tolerance.spare_nodes - _idle_for(job, nodes, held, coming)
        if short > 0:
            pool = next(p.name for p in job.spec.resources.pools if p.kind == "spare")
            kind, already = wanted.get(pool, ("spare", 0))
            wanted[pool] = (kind, max(already, short))
    return wanted


def spare_surplus(
    jobs: list[JobRecord],
    nodes: list[NodeView],
    coming: dict[str, int],
    added: dict[str, int],
    provisioned: list[str] = (),
) -> list[NodeView]:
    """The idle spare-pool nodes to retire. ``added``: nodes orch provisioned into each pool less those
    it retired (the most it may take away); ``provisioned``: the names it provisioned, oldest first,
    retired first (newest first), then the others by name, highest first."""
    held = _held(jobs)
    chosen: list[NodeView] = []
    for pool, extra in sorted(added.items()):
        idle_here = [n for n in nodes if n.pool == pool and usable(n) and n.name not in held]
        allowance = min(extra, len(idle_here))
        for job in filter(_wants_spares, jobs):
            if pool not in {p.name for p in job.spec.resources.pools}:
                continue
            if not job.assignment:  # it waits to be placed (or placed again): it may need them
                allowance = 0
                break
            allowance = min(allowance, _idle_for(job, nodes, held, coming) - job.spec.fault_tolerance.spare_nodes)
        if allowance > 0:
            chosen += sorted(idle_here, key=lambda n: _retire_order(n.name, list(provisioned)))[:allowance]
    return chosen


def _retire_order(name: str, provisioned: list[str]) -> tuple:
    if name in provisioned:
        return (0, -provisioned.index(name))
    return (1, [-int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])
