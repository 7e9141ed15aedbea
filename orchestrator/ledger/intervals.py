"""Where a job attempt's device-hours went, computed from what was persisted about it.

An attempt holds its devices from placement until it is released (it ends, is preempted, or its
workers are lost). That span is cut into disjoint intervals, so the categories of one attempt add
up exactly to devices x held time:

- ``startup``: devices held while the gang starts (workers, engine, data, restore), before the first
  step of the first attempt. Time waiting for devices is not here: it holds no devices (``queued_s``
  of ``orch cost``);
- ``recovery``: the same start-up time on a restart, and the time between a failure and the release
  (less the step that was under way, which is ``lost``: at most one step's time after the last step);
- ``productive``: from the start of the first step to the end of the last step that was kept,
  less checkpoint stalls, split by training phase;
- ``checkpoint``: steps' checkpoint stalls, and the final or preemption save after the last step;
- ``lost``: steps taken after the last committed checkpoint of an attempt that ended by losing its
  workers (they are trained again on the restart; all of them if nothing was ever committed), the
  step under way when they went, and the tail of a failed or cancelled attempt. An attempt that
  *stopped* on request to restart elsewhere (a node's notice) loses the steps after its committed
  checkpoint too, but no step was under way: its tail is the emergency save (``checkpoint``).

Each node of the gang gets its own intervals (``devices_per_node`` devices each), priced at its
pool's price. Pure functions: no database, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.lifecycle import LedgerCategory
from orchestrator.state.records import Interval

LEGACY_CATEGORIES = {"queued": "startup"}  # rows written before start-up had its own name

__all__ = ["Attempt", "Interval", "NodeHold", "StepRecord", "attempt_intervals", "summarize"]


@dataclass(frozen=True)
class StepRecord:
    step: int
    end: float  # wall time when the step (and its checkpoint stall) finished
    step_time_s: float
    checkpoint_stall_s: float
    phase: str
    steps_folded: int = 1  # steps this record stands for (the simulator folds many into one)

    @property
    def one_step_s(self) -> float:
        return self.step_time_s / max(1, self.steps_folded)


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
    ending: str  # succeeded | checkpointed | stopped | lost | failed | cancelled | running
    steps: tuple[StepRecord, ...]
    committed_step: int | None  # last checkpoint committed during the attempt (or resumed from)
    device_type: str
    nodes: tuple[NodeHold, ...]
    first_phase: str
    # steps up to this one were booked as kept by an earlier attempt, which this one could not resume
    # from (a checkpoint committed only in peer memory whose copies were gone, or one found damaged):
    # trained again, they are lost work, not productive work counted twice
    redo_until: int | None = None


def _segments(a: Attempt) -> list[tuple[str, str, float, float]]:
    """(category, phase, start, end) covering [held_from, held_until] without gaps or overlaps."""
    segments: list[tuple[str, str, float, float]] = []
    start_category = "startup" if a.attempt <= 1 else "recovery"
    if not a.steps:
        tail = {"lost": "recovery", "stopped": "recovery", "failed": "lost", "cancelled": "lost"}.get(
            a.ending, start_category
        )
        return [
            (
                tail if a.ending in ("lost", "stopped", "failed", "cancelled") else start_category,
                a.first_phase,
                a.held_from,
                a.held_until,
            )
        ]
    first = a.steps[0]
    cursor = max(a.held_from, first.end - first.checkpoint_stall_s - first.step_time_s)
    segments.append((start_category, first.phase, a.held_from, cursor))
    # an attempt that lost its workers keeps only what was committed; with no checkpoint at all
    # (None: the job never committed one) every step it took is trained again
    lost_after = (a.committed_step or 0) if a.ending in ("lost", "stopped") else None
    for s in a.steps:
        work_end = max(cursor, s.end - s.checkpoint_stall_s)
        redone = a.redo_until is not None and s.step <= a.redo_until
        category = "lost" if redone or (lost_after is not None and s.step > lost_after) else "productive"
        segments.append((category, s.phase, cursor, work_end))
        stall_end = max(work_end, min(s.end, a.held_until))
        segments.append(("checkpoint", s.phase, work_end, stall_end))
        cursor = stall_end
    tail_category = {
        "succeeded": "checkpoint",
        "checkpointed": "checkpoint",
        "stopped": "checkpoint",
        "lost": "recovery",
        "failed": "lost",
        "cancelled": "lost",
        "running": "productive",
    }[a.ending]
    tail_end = max(cursor, a.held_until)
    if a.ending == "lost":  # the step under way when the workers went is lost work, not recovery
        partial_end = min(tail_end, cursor + a.steps[-1].one_step_s)
        segments.append(("lost", a.steps[-1].phase, cursor, partial_end))
        cursor = partial_end
    segments.append((tail_category, a.steps[-1].phase, cursor, tail_end))
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
        folded[key] = NodeHold(
            f"pool:{n.pool}", n.pool, n.pool_kind, n.devices + (seen.devices if seen else 0), n.price_per_device_hour
        )
    return tuple(folded.values())


def attempt_intervals(a: Attempt, by_pool: bool = False) -> list[Interval]:
    """The attempt's intervals, one set per node, or per pool with ``by_pool``: the same device-hours
    and dollars in every category, in fewer rows (the simulator's 256-node gangs restart thousands
    of times)."""
    segments = _segments(a)
    nodes = pool_holds(a.nodes) if by_pool else a.nodes
    return [
        Interval(
            a.job_id,
            a.attempt,
            n.node,
            n.pool,
            n.pool_kind,
            n.devices,
            a.device_type,
            phase,
            category,
            start,
            end,
            n.price_per_device_hour,
        )
        for n in nodes
        for category, phase, start, end in segments
    ]


def summarize(intervals: list[Interval]) -> dict:
    """Device-hours by category and by phase, dollars, and goodput (productive / total)."""
    by_category = {c.value: 0.0 for c in LedgerCategory}
    by_phase: dict[str, float] = {}
    by_pool: dict[str, dict] = {}
    cost = 0.0
    for i in intervals:
        by_category[LEGACY_CATEGORIES.get(i.category, i.category)] += i.device_hours
        by_phase[i.phase] = by_phase.get(i.phase, 0.0) + i.device_hours
        pool = by_pool.setdefault(i.pool, {"gpu_hours": 0.0, "cost_usd": 0.0, "kind": i.pool_kind})
        pool["gpu_hours"] += i.device_hours
        pool["cost_usd"] += i.cost_usd
        cost += i.cost_usd
    total = sum(by_category.values())
    return {
        "gpu_hours": {"total": total, **by_category},
        "by_phase": by_phase,
        "by_pool": by_pool,
        "cost_usd": cost,
        "goodput": by_category["productive"] / total if total else 0.0,
    }
