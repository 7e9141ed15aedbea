"""Whether a job may restart once more: a rate over a sliding window, not a lifetime count.

Why: at Meta's failure rate scaled to 256 nodes a run loses a node about every 4 h, so a 57-day run
restarts some 350 times; a lifetime ``max_restarts: 100`` failed the V3 job on day 19 with a third
of its tokens done. What should stop a job is restarts coming faster than the infrastructure
explains (a window), or its own code crashing again and again (a crash loop), which has its own,
much smaller allowance so it stops within minutes while node losses still have room.

The decision is pure: the controller passes the spec, the kind of this restart, the job's earlier
restarts inside the window (from the store's ``job.recovering`` events) and its lifetime count.
Without ``fault_tolerance.restart_budget`` the old rule holds: ``max_restarts`` restarts in a life
(3 unless set), and a crash fails at once. With one, ``max_restarts`` is an optional lifetime cap on
top of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.lifecycle import FailureReason, RestartKind
from orchestrator.spec.schema import FaultToleranceSpec

INFRASTRUCTURE = RestartKind.INFRASTRUCTURE.value  # node loss, a node taken with a notice, checkpoint storage
CRASH = RestartKind.CRASH.value  # the job's own error (a training error)


def restart_kind(failure: FailureReason | None) -> str:
    """A training error is the job's own crash; everything else that restarts is the infrastructure's."""
    return CRASH if failure == FailureReason.TRAINING_ERROR else INFRASTRUCTURE


@dataclass(frozen=True)
class Refusal:
    """Why no further restart is allowed: the failure reason the job fails with, and the text."""

    reason: FailureReason
    detail: str


def window_s(ft: FaultToleranceSpec) -> float | None:
    """The budget's window in seconds (None: no windowed budget, the lifetime count alone)."""
    return None if ft.restart_budget is None else ft.restart_budget.window_hours * 3600.0


def refuse_restart(
    ft: FaultToleranceSpec, kind: str, earlier_in_window: list[str], lifetime_used: int
) -> Refusal | None:
    """None when restart number ``lifetime_used + 1`` (of ``kind``) is allowed, else why not.

    ``earlier_in_window`` holds the kinds of the job's restarts inside the window before this one."""
    budget = ft.restart_budget
    cap = ft.lifetime_restarts
    if budget is None:
        if kind == CRASH:
            return Refusal(FailureReason.TRAINING_ERROR, "a crash fails the job (no restart_budget.crash_restarts)")
        if lifetime_used >= cap:
            return Refusal(FailureReason.MAX_RESTARTS, f"{lifetime_used} restarts used of {cap}")
        return None
    if cap is not None and lifetime_used >= cap:
        return Refusal(FailureReason.MAX_RESTARTS, f"{lifetime_used} restarts used of max_restarts {cap}")
    used = sum(1 for k in earlier_in_window if k == kind)
    if kind == CRASH:
        if used >= budget.crash_restarts:
            return Refusal(
                FailureReason.TRAINING_ERROR,
                f"crash loop: {used} crash restart(s) in the last {budget.window_hours:g} h "
                f"of restart_budget.crash_restarts={budget.crash_restarts}",
            )
        return None
    if used >= budget.restarts:
        return Refusal(
            FailureReason.MAX_RESTARTS,
            f"{used} infrastructure restarts in the last {budget.window_hours:g} h "
            f"of restart_budget.restarts={budget.restarts}",
        )
    return None
