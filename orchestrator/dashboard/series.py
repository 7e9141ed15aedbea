"""Time series for the dashboard's charts, computed from the ledger and the step metrics."""

from __future__ import annotations

import numpy as np

from orchestrator.ledger.report import job_intervals
from orchestrator.lifecycle import HOLDING, LedgerCategory
from orchestrator.state.store import StateStore

# How the charts draw each ledger category; the page takes names, order and colours from the API
# (``category_legend``), so the categories are defined once, in ``lifecycle.LedgerCategory``.
CATEGORY_COLORS = {
    LedgerCategory.PRODUCTIVE: "#2e8b57",
    LedgerCategory.CHECKPOINT: "#2f6fdb",
    LedgerCategory.STARTUP: "#95a5a6",
    LedgerCategory.RECOVERY: "#d98c00",
    LedgerCategory.LOST: "#c0392b",
}


def category_legend() -> list[dict]:
    """The ledger's categories in their order, each with its chart colour (a new category without a
    colour is drawn grey)."""
    return [{"name": c.value, "color": CATEGORY_COLORS.get(c, "#7f8c8d")} for c in LedgerCategory]


def gpu_hours_over_time(store: StateStore, now: float, samples: int = 120) -> dict:
    """Cumulative device-hours by category at ``samples`` times from the first placement to now."""
    intervals = []
    with store.snapshot() as view:  # one instant: an attempt is open or closed, never both
        for job in view.jobs():
            if job.state in HOLDING or view.intervals(job.id):
                intervals += job_intervals(view, job, now)
    if not intervals:
        return {"t": [], **{c.value: [] for c in LedgerCategory}}
    start = min(i.start for i in intervals)
    times = np.linspace(start, max(now, start + 1.0), samples)
    series = {"t": times.tolist()}
    for category in (c.value for c in LedgerCategory):
        chosen = [i for i in intervals if i.category == category]
        if not chosen:
            series[category] = [0.0] * samples
            continue
        begins = np.array([i.start for i in chosen])[None, :]
        ends = np.array([i.end for i in chosen])[None, :]
        devices = np.array([i.devices for i in chosen])[None, :]
        held = np.clip(np.minimum(ends, times[:, None]) - begins, 0.0, None)
        series[category] = ((held * devices).sum(axis=1) / 3600.0).tolist()
    return series


def job_metric_series(store: StateStore, job_id: str, after_step: int = -1) -> dict:
    """Per step: loss, tokens/s, step time, expert imbalance, checkpoint stalls (newest attempt wins)."""
    rows = store.metrics(job_id, after_step)
    names = ("loss", "tokens_per_s", "step_time_s", "expert_imbalance", "checkpoint_stall_s", "lr")
    return {
        "step": [r["step"] for r in rows],
        "attempt": [r.get("attempt") for r in rows],
        **{n: [r.get(n) for r in rows] for n in names},
    }
