"""Where a job attempt's device-hours went, computed from what was persisted about it.

An attempt holds its devices from placement until it is released (it ends, is preempted, or its
workers are lost). That span is cut into disjoint intervals, so the categories of one attempt add
up exactly to devices x held time:

- ``queued``: devices held while the gang starts, before the first step (first attempt);
- ``recovery``: the same start-up time on a restart, and the time between a failure and the release;
- ``productive``: from the start of the first step to the end of the last step that was kept,
  less checkpoint stalls, split by training phase;
- ``checkpoint``: steps' checkpoint stalls, and the final or preemption save after the last step;
- ``lost``: steps taken after the last committed checkpoint of an attempt that ended by losing its
  workers (they are trained again on the restart), and the tail of a failed or cancelled attempt.

Each node of the gang gets its own intervals (``devices_per_node`` devices each), priced at its
pool's price. Pure functions: no database, no clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CATEGORIES = ("productive", "checkpoint", "recovery", "lost", "queued")


@dataclass(frozen=True)
class Interval:
    job_id: str
    attempt: int
    node: str
    pool: str
    pool_kind: str
    devices: int
    device_type: str
    phase: str
    category: str
    start: float
    end: float
    price_per_device_hour: float

    @property
    def device_hours(self) -> float:
        return self.devices * max(0.0, self.end - self.start) / 3600.0

    @property
    def cost_usd(self) -> float:
        return self.device_hours * self.price_per_device_hour

    def as_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepRecord:
    step: int
    end: float  # wall time when the step (and its checkpoint stall) finished
    step_time_s: float
    checkpoint_stall_s: float
    phase: str


@dataclass(frozen=True)
class NodeHold:
    node: str
    pool: str
    pool_kind: str
    devices: int
    price_per_device_hour: float


@dataclass(frozen=True)
class Attempt:
    job_id: str
    attempt: int
    held_from: float
    held_until: float
    ending: str  # succeeded | checkpointed | lost | failed | cancelled | running
    steps: tuple[StepRecord, ...]
    committed_step: int | None  # last checkpoint committed during the attempt (or resumed from)
    device_type: str
    nodes: tuple[NodeHold, ...]
    first_phase: str


def _segments(a: Attempt) -> list[tuple[str, str, float, float]]:
    """(category, phase, start, end) covering [held_from, held_until] without gaps or overlaps."""
    segments: list[tuple[str, str, float, float]] = []
    start_category = "queued" if a.attempt <= 1 else "recovery"
    if not a.steps:
        tail = {"lost": "recovery", "failed": "lost", "cancelled": "lost"}.get(a.ending, start_category)
        return [(tail if a.ending in ("lost", "failed", "cancelled") else start_category, a.first_phase,
                 a.held_from, a.held_until)]
    first = a.steps[0]
    cursor = max(a.held_from, first.end - first.checkpoint_stall_s - first.step_time_s)
    segments.append((start_category, first.phase, a.held_from, cursor))
    lost_after = a.committed_step if a.ending == "lost" else None
    for s in a.steps:
        work_end = max(cursor, s.end - s.checkpoint_stall_s)
        category = "lost" if lost_after is not None and s.step > lost_after else "productive"
        segments.append((category, s.phase, cursor, work_end))
        stall_end = max(work_end, min(s.end, a.held_until))
        segments.append(("checkpoint", s.phase, work_end, stall_end))
        cursor = stall_end
    tail_category = {"succeeded": "checkpoint", "checkpointed": "checkpoint", "lost": "recovery",
                     "failed": "lost", "cancelled": "lost", "running": "productive"}[a.ending]
    segments.append((tail_category, a.steps[-1].phase, cursor, max(cursor, a.held_until)))
    return _merge([seg for seg in segments if seg[3] > seg[2]])


def _merge(segments: list[tuple[str, str, float, float]]) -> list[tuple[str, str, float, float]]:
    merged: list[tuple[str, str, float, float]] = []
    for seg in segments:
        if merged and merged[-1][0] == seg[0] and merged[-1][1] == seg[1] and abs(merged[-1][3] - seg[2]) < 1e-9:
            merged[-1] = (seg[0], seg[1], merged[-1][2], seg[3])
        else:
            merged.append(seg)
    return merged


def pool_holds(nodes: tuple[NodeHold, ...]) -> tuple[NodeHold, ...]:
    """Nodes of one pool at one price folded into one hold (node ``pool:NAME``) with their devices summed."""
    folded: dict[tuple, NodeHold] = {}
    for n in nodes:
        key = (n.pool, n.pool_kind, n.price_per_device_hour)
        seen = folded.get(key)
        folded[key] = NodeHold(f"pool:{n.pool}", n.pool, n.pool_kind, n.devices + (seen.devices if seen else 0),
                               n.price_per_device_hour)
    return tuple(folded.values())


def attempt_intervals(a: Attempt, by_pool: bool = False) -> list[Interval]:
    """The attempt's intervals, one set per node, or per pool with ``by_pool``: the same device-hours
    and dollars in every category, in fewer rows (the simulator's 256-node gangs restart thousands
    of times)."""
    segments = _segments(a)
    nodes = pool_holds(a.nodes) if by_pool else a.nodes
    return [Interval(a.job_id, a.attempt, n.node, n.pool, n.pool_kind, n.devices, a.device_type, phase, category,
                     start, end, n.price_per_device_hour)
            for n in nodes for category, phase, start, end in segments]


def summarize(intervals: list[Interval]) -> dict:
    """Device-hours by category and by phase, dollars, and goodput (productive / total)."""
    by_category = {c: 0.0 for c in CATEGORIES}
    by_phase: dict[str, float] = {}
    by_pool: dict[str, dict] = {}
    cost = 0.0
    for i in intervals:
        by_category[i.category] += i.device_hours
        by_phase[i.phase] = by_phase.get(i.phase, 0.0) + i.device_hours
        pool = by_pool.setdefault(i.pool, {"gpu_hours": 0.0, "cost_usd": 0.0, "kind": i.pool_kind})
        pool["gpu_hours"] += i.device_hours
        pool["cost_usd"] += i.cost_usd
        cost += i.cost_usd
    total = sum(by_category.values())
    return {"gpu_hours": {"total": total, **by_category}, "by_phase": by_phase, "by_pool": by_pool,
            "cost_usd": cost, "goodput": by_category["productive"] / total if total else 0.0}
