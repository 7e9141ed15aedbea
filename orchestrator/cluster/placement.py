"""Scheduling decisions as a pure function of the queue, the running jobs and the node inventory.

No Ray here: the controller, the simulator, the RayJob entrypoint (``k8s/entrypoint.py``) and the
benchmarks call ``schedule`` with plain data. It sits in ``cluster/`` beside ``NodeView`` (below
``control/``) because those callers live in different layers; the controller owns when it runs.
Policy:
- jobs in priority order (higher first), then by submission time;
- all-or-nothing gangs of whole nodes: a job needs ``nodes`` nodes with ``devices_per_node`` free
  devices each, from the pools its spec names (spare pools are kept for recovery);
- per-team device quotas are checked before placement;
- a job that does not fit may preempt strictly lower-priority running jobs, lowest priority first and,
  among equal priorities, the one that loses least (the fewest device-seconds trained since its newest
  committed checkpoint: the freshest checkpoint at equal size), then the newest, when that frees
  enough nodes; those nodes are then reserved for it. A victim is asked to checkpoint and stop by a
  deadline (the controller's ``CHECKPOINT_STOP``, ``PREEMPT_GRACE_S``), so what it loses is its save,
  not its unsaved work, when the save fits before the deadline;
- a job that waits gets a reason with the numbers.
Nodes are chosen in pool order of the spec, then by topology label and name, so a gang lands on
neighbouring nodes and the plan's rank -> node order follows the sorted list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.cluster.provider import NodeView

__all__ = ["Decisions", "JobView", "NodeView", "Place", "Preempt", "Wait", "capacity_problem", "schedule", "usable"]


@dataclass(frozen=True)
class JobView:
    id: str
    team: str
    priority: int
    submitted_at: float
    nodes: int
    devices_per_node: int
    pools: tuple[str, ...]  # allowed pools, in preference order
    assigned: tuple[str, ...] = ()  # nodes held (running jobs)
    unsaved_s: float = 0.0  # running jobs: seconds trained since the newest committed checkpoint

    @property
    def unsaved_device_s(self) -> float:
        """The work a stop now would throw away (device-seconds): the preemption order among equals."""
        return self.unsaved_s * self.devices

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node


@dataclass(frozen=True)
class Place:
    job_id: str
    nodes: tuple[str, ...]  # logical node i of the plan -> nodes[i]


@dataclass(frozen=True)
class Wait:
    job_id: str
    reason: str


@dataclass(frozen=True)
class Preempt:
    job_id: str  # the job that needs the nodes
    victims: tuple[str, ...]
    reason: str


@dataclass
class Decisions:
    place: list[Place] = field(default_factory=list)
    wait: list[Wait] = field(default_factory=list)
    preempt: list[Preempt] = field(default_factory=list)


def _order_key(job: JobView) -> tuple:
    return (-job.priority, job.submitted_at, job.id)


def usable(node: NodeView) -> bool:
    """Alive and not cordoned. Whether a spare may be used is the job's pool list's business: only a
    recovering job lists the spare pools."""
    return node.alive and not node.cordoned


def _candidates(job: JobView, nodes: list[NodeView]) -> list[NodeView]:
    rank = {pool: i for i, pool in enumerate(job.pools)}
    fitting = [n for n in nodes if n.pool in rank and n.devices >= job.devices_per_node and usable(n)]
    return sorted(fitting, key=lambda n: (rank[n.pool], n.topology, n.name))


class _Lane:
    """One ordered candidate list, consumed during one scheduling pass. Nodes only ever leave the
    free set during a pass, so a node found taken at the front never needs looking at again: many
    queued jobs cost about one walk over the cluster, not one walk each."""

    def __init__(self, nodes: list[NodeView]):
        self.nodes, self.start = nodes, 0

    def first_free(self, free: set[str], count: int) -> tuple[str, ...]:
        while self.start < len(self.nodes) and self.nodes[self.start].name not in free:
            self.start += 1
        found = []
        for i in range(self.start, len(self.nodes)):
            if len(found) >= count:
                break
            name = self.nodes[i].name
            if name in free:
                found.append(name)
        return tuple(found)


def capacity_problem(job: JobView, nodes: list[NodeView]) -> str | None:
    """Why the job can never run on this inventory (None when it could, once nodes are free)."""
    fitting = _candidates(job, [n for n in nodes if n.alive])
    if len(fitting) < job.nodes:
        return (
            f"needs {job.nodes} node(s) with {job.devices_per_node} devices in pools {', '.join(job.pools)}; "
            f"the cluster has {len(fitting)}"
        )
    return None


def schedule(
    queue: list[JobView], running: list[JobView], nodes: list[NodeView], quotas: dict[str, int] | None = None
) -> Decisions:
    quotas = quotas or {}
    decisions = Decisions()
    held = {name for job in running for name in job.assigned}
    free = {n.name for n in nodes if usable(n) and n.name not in held}
    usage: dict[str, int] = {}
    for job in running:
        usage[job.team] = usage.get(job.team, 0) + job.devices
    victims_taken: set[str] = set()
    lanes: dict[tuple, _Lane] = {}  # jobs asking for the same pools share one ordered candidate list
    for job in sorted(queue, key=_order_key):
        quota = quotas.get(job.team)
        if quota is not None and usage.get(job.team, 0) + job.devices > quota:
            decisions.wait.append(
                Wait(
                    job.id,
                    f"team {job.team} quota: {usage.get(job.team, 0)} of {quota} devices "
                    f"in use, job needs {job.devices}",
                )
            )
            continue
        key = (job.pools, job.devices_per_node)
        if key not in lanes:
            lanes[key] = _Lane(_candidates(job, nodes))
        lane = lanes[key]
        candidates = lane.nodes
        chosen = lane.first_free(free, job.nodes)
        if len(chosen) >= job.nodes:
            decisions.place.append(Place(job.id, chosen))
            free.difference_update(chosen)
            usage[job.team] = usage.get(job.team, 0) + job.devices
            continue
        available = lane.first_free(free, len(candidates))
        preempt = _plan_preemption(job, candidates, free, running, victims_taken)
        if preempt is not None:
            decisions.preempt.append(preempt)
            victims_taken.update(preempt.victims)
            for victim in running:  # reserve what the victims free for this job
                if victim.id in preempt.victims:
                    free.difference_update(victim.assigned)
            free.difference_update(available)
            decisions.wait.append(Wait(job.id, preempt.reason))
            continue
        decisions.wait.append(
            Wait(
                job.id,
                f"needs {job.nodes} free node(s) with {job.devices_per_node} devices in "
                f"pools {', '.join(job.pools)}; {len(available)} free of {len(candidates)}",
            )
        )
        free.difference_update(available)  # no backfill onto nodes a higher-priority job is waiting for
    return decisions


def _plan_preemption(
    job: JobView, candidates: list[NodeView], free: set[str], running: list[JobView], taken: set[str]
) -> Preempt | None:
    eligible = {n.name for n in candidates}
    have = [name for name in (n.name for n in candidates) if name in free]
    lower = sorted(
        (r for r in running if r.priority < job.priority and r.id not in taken),
        key=lambda r: (r.priority, r.unsaved_device_s, -r.submitted_at),
    )
    victims = []
    for victim in lower:
        gained = [name for name in victim.assigned if name in eligible]
        if not gained:
            continue
        victims.append(victim.id)
        have += gained
        if len(have) >= job.nodes:
            return Preempt(
                job.id,
                tuple(victims),
                f"preempting {', '.join(victims)} (priority {job.priority} over "
                f"{', '.join(str(r.priority) for r in lower if r.id in victims)})",
            )
    return None
