"""The rest of the run, N times over: a vectorised renewal simulation seeded from the evidence.

Why not ``orch simulate`` itself: it replays every controller decision and costs seconds per run
for V3 on spot (8 s with 1,600 restarts, bench/RESULTS.md); a forecast wants 100 runs in seconds.
This model keeps what decides the totals and what ``orch simulate`` does the same way, and
``tests/unit/test_forecast.py`` checks it against ``orch simulate`` runs:

- each run draws its pools' interruption rates from their Gamma posteriors (the uncertainty about
  the rate) and its step-time ratio from the measured ratio's standard error; interruptions of the
  gang are then Poisson at the drawn rate (the dice);
- between interruptions the gang computes, saving every ``interval_s`` of compute with a stall of
  ``save_stall_s``; save *i* is restorable ``save_commit_s`` after it starts (once committed in
  peer memory, or without that tier after its upload; one save in flight at a time). At an
  interruption, work since the newest restorable save is lost, the gang is held ``recovery_s``
  more (the tail, restart and restore, as measured), then waits ``replacement_wait_s`` for nodes without holding them;
- the first interruption also loses the work done since the last checkpoint before now;
- a run that would need more restarts than ``max_restarts`` allows fails there, and so does one
  whose interruption finds ``restart_budget.restarts`` infrastructure restarts already inside the
  window before it (the job's own recent restarts count), as the controller refuses it
  (``control/restart_budget.py``); ``failed_on`` says which rule failed each run.

Dollars are held device-hours at the gang's blended price, plus checkpoint PUTs per save and
storage of the ``keep_last`` checkpoints (and the ``keep_every`` ones as they accumulate) for the
rest of the run.
"""

from __future__ import annotations

import numpy as np

from orchestrator.forecast.evidence import DAY, Evidence

GIB = 1024**3
HOURS_PER_MONTH = 730.0


def draw_rates(ev: Evidence, runs: int, rng: np.random.Generator) -> np.ndarray:
    """The gang's interruption rate per second, one per run, from the pools' posteriors."""
    rate = np.zeros(runs)
    for p in ev.pools:
        if p.shape <= 0 or p.rate <= 0:
            continue
        rate += p.nodes * rng.gamma(p.shape, 1.0 / p.rate, size=runs) / DAY
    return rate


def _segment_to_end(work: np.ndarray, ev: Evidence) -> np.ndarray:
    """Wall seconds to finish ``work`` compute seconds with no interruption: saves and the final save."""
    saves = np.maximum(np.ceil(work / ev.interval_s) - 1.0, 0.0)
    return work + saves * ev.save_stall_s + ev.final_save_s


def simulate_rest(ev: Evidence, runs: int, seed: int = 0) -> dict:
    """Arrays (one entry per run) of held seconds, wall seconds, restarts, progress and whether it failed.

    Each segment runs from a placement: ``recovery_s`` of start-up (restart and restore, none for a
    job already running), then compute and saves. An interruption can strike in either part."""
    rng = np.random.default_rng(seed)
    rate = draw_rates(ev, runs, rng)
    scale = np.clip(rng.normal(1.0, ev.scale_rel_se, size=runs), 0.5, 2.0)
    work = ev.remaining_compute_s * scale
    risk = ev.at_risk_s * scale
    held, wall, computed = np.zeros(runs), np.zeros(runs), np.zeros(runs)
    startup = np.full(runs, 0.0 if ev.state in ("running", "placing", "checkpointing") else ev.recovery_s)
    if ev.state in ("recovering", "preempted"):
        wall += ev.replacement_wait_s
    restarts = np.zeros(runs, dtype=np.int64)
    active = work > 0
    failed = np.zeros(runs, dtype=bool)
    first = np.ones(runs, dtype=bool)
    allowed = max(0, ev.max_restarts - ev.restarts)
    failed_on = np.full(runs, "", dtype=object)
    window = RestartWindow(ev, runs)
    cycle = ev.interval_s + ev.save_stall_s
    while active.any():
        idx = np.flatnonzero(active)
        need = startup[idx] + _segment_to_end(work[idx], ev)
        with np.errstate(divide="ignore"):
            gap = np.where(rate[idx] > 0, rng.exponential(1.0, size=idx.size) / np.maximum(rate[idx], 1e-300), np.inf)
        done = gap >= need
        fin = idx[done]
        held[fin] += need[done]
        wall[fin] += need[done]
        computed[fin] += work[fin]
        work[fin] = 0.0
        active[fin] = False
        hit, x = idx[~done], gap[~done]
        trained = np.maximum(x - startup[hit], 0.0)  # wall seconds of compute and saves before the hit
        commits = np.floor(np.maximum(trained - ev.save_commit_s + ev.save_stall_s, -1.0) / cycle)
        progress = np.minimum(np.maximum(commits, 0.0) * ev.interval_s, work[hit])
        computed[hit] += np.minimum(trained, work[hit])
        work[hit] -= progress
        work[hit] += np.where(first[hit] & (progress <= 0), risk[hit], 0.0)  # the work since the last checkpoint
        first[hit] = False
        restarts[hit] += 1
        held[hit] += x
        wall[hit] += x
        over_cap = restarts[hit] > allowed
        over_window = window.refuses(hit, wall[hit]) & ~over_cap
        failed_on[hit[over_cap]] = "max_restarts"
        failed_on[hit[over_window]] = "restart_budget"
        over = over_cap | over_window
        window.record(hit[~over], wall[hit[~over]])
        failed[hit[over]] = True
        active[hit[over]] = False
        again = hit[~over]
        wall[again] += ev.replacement_wait_s
        startup[again] = ev.recovery_s
    return {
        "held_s": held,
        "wall_s": wall,
        "restarts": restarts,
        "failed": failed,
        "failed_on": failed_on,
        "scale": scale,
        "rate_per_day": rate * DAY,
        "computed_s": computed,
    }


class RestartWindow:
    """The windowed restart budget over all runs at once. Every run still active has had the same
    number of restarts (each pass of ``simulate_rest`` ends a run or restarts it), so the times of
    restart *k* of every run form one array; the job's own restarts inside the window come first."""

    def __init__(self, ev: Evidence, runs: int):
        self.window, self.limit, self.runs = ev.window_s, ev.window_restarts, runs
        self.times = [np.full(runs, t) for t in sorted(ev.recent_restarts)]

    def refuses(self, idx: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Whether a restart of runs ``idx`` at ``at`` (seconds from now) finds the window full: the
        ``limit``-th newest earlier restart is inside ``(at - window, at]``."""
        if self.window is None or self.limit is None:
            return np.zeros(idx.size, dtype=bool)
        if self.limit == 0:
            return np.ones(idx.size, dtype=bool)
        if len(self.times) < self.limit:
            return np.zeros(idx.size, dtype=bool)
        return self.times[-self.limit][idx] >= at - self.window

    def record(self, idx: np.ndarray, at: np.ndarray) -> None:
        """The runs ``idx`` restarted at ``at``; runs not restarting now have ended, so their entry is unused."""
        if self.window is None or self.limit is None:
            return
        times = np.full(self.runs, -np.inf)
        times[idx] = at
        self.times.append(times)
        del self.times[: -max(1, self.limit)]  # only the ``limit`` newest decide


def storage_rest(ev: Evidence, sim: dict) -> np.ndarray:
    """Dollars of checkpoint PUTs and storage for the rest of each run."""
    ck = ev.checkpoint
    saves = sim["computed_s"] / ev.interval_s + sim["restarts"]
    gib = ck["bytes"] / GIB
    months = sim["wall_s"] / 3600.0 / HOURS_PER_MONTH
    kept_every = 0.0
    if ck["keep_every"]:
        kept_every = max(0, ev.total_steps // ck["keep_every"] - ev.step // ck["keep_every"])
    gib_months = gib * months * (ck["keep_last"] + kept_every / 2.0)
    return saves * ck["put_usd"] + gib_months * ck["gb_month_usd"]
