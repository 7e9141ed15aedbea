"""One simulated job attempt: steps, checkpoint saves and commits on simulated time.

The attempt asks the real ``IntervalPolicy`` when to save (``due``, then ``saved`` with the stall,
as the trainer does), runs steps from the ``StepTimeline``, keeps one save in flight at a time,
and is advanced lazily: only as far as the next event, so a 240K-step run costs one loop turn per
checkpoint, not per step. When it ends, it hands the ledger the same kind of step records a real
runner writes, folded into one record per phase and per side of the last committed checkpoint:
every figure the ledger computes from them (productive, checkpoint, lost) stays exact.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from orchestrator.checkpoint.policy import IntervalPolicy
from orchestrator.clock import ManualClock
from orchestrator.lifecycle import OutcomeStatus
from orchestrator.plan.costs import RunCosts
from orchestrator.plan.timeline import StepTimeline
from orchestrator.spec.schema import CheckpointInterval, JobSpec
from orchestrator.state.records import RunnerOutcome


@dataclass
class Outcome:
    status: str  # succeeded | failed | stopped
    at: float
    step: int
    error: str = ""
    infrastructure: bool = False

    def as_outcome(self, attempt: int) -> RunnerOutcome:
        """What a real runner would record for the attempt."""
        return RunnerOutcome(attempt, OutcomeStatus(self.status), self.step, self.error or None, self.infrastructure)


@dataclass
class SimulatedAttempt:
    job_id: str
    attempt: int
    nodes: tuple[str, ...]
    start_step: int  # resumed from this committed checkpoint (0: from scratch)
    ready_at: float  # first step starts (gang started, checkpoint restored)
    timeline: StepTimeline
    costs: RunCosts
    spec: JobSpec
    measured: dict | None = None  # the policy's save costs as the resumed checkpoint recorded them
    observed: tuple[int, float] | None = None  # (interruptions of the gang so far, seconds it was exposed)
    durable_start: int | None = None  # the newest step in storage at the start (None: ``start_step``)
    redo_until: int | None = None  # steps an earlier attempt was booked as keeping, trained again here
    step: int = 0
    t: float = 0.0  # when ``step`` (and its save stall) ended
    committed: int = 0  # restorable: committed to storage or, with the in-memory tier, in memory
    durable: int = 0  # committed to storage
    inflight: tuple[int, float, dict, float] | None = None  # (step, commits at, the policy's costs, restorable at)
    finishing_at: float | None = None  # the final save ends
    pending_stop: dict | None = None  # a checkpoint-and-stop under way (applied when it ends)
    outcome: Outcome | None = None
    save_steps: list[int] = field(default_factory=list)
    stall_prefix: list[float] = field(default_factory=lambda: [0.0])  # cumulative stall after each save

    def __post_init__(self) -> None:
        self.step, self.t, self.committed = self.start_step, self.ready_at, self.start_step
        self.durable = self.start_step if self.durable_start is None else self.durable_start
        self.clock = ManualClock(self.ready_at)
        self.policy = IntervalPolicy(self.spec, self.clock)
        self.policy.resume(self.start_step, self.measured)
        if self.observed is not None:
            self.policy.observe_interruptions(*self.observed)
        self.committed_measure = self.measured  # what the newest committed checkpoint recorded

    @property
    def saves(self) -> int:
        return len(self.save_steps)

    # ------------------------------------------------------------------ progress

    def advance(self, until: float) -> float | None:
        """Run to ``until``; the time the attempt finished if it did by then."""
        total = self.timeline.total_steps
        if self.pending_stop is not None:
            return None  # saving to stop: no more steps
        while self.outcome is None and until >= self.t:
            self._commit_by(self.t)
            if self.finishing_at is not None:
                if self.finishing_at > until:
                    return None
                self.t, self.committed, self.durable, self.inflight = self.finishing_at, total, total, None
                self.outcome = Outcome("succeeded", self.t, total)
                return self.t
            due = self._next_save()
            ends = self.t + self.timeline.seconds(self.step, due)
            if ends > until:
                done = self.timeline.steps_done_within(self.step, until - self.t)
                self.t += self.timeline.seconds(self.step, done)
                self.step = done
                self._commit_by(until)
                return None
            self.t, self.step = ends, due
            self._save(due, final=due >= total)
        return None

    def _next_save(self) -> int:
        """The step at which the policy asks for the next save (or the last step)."""
        interval, total = self.spec.checkpoint.interval, self.timeline.total_steps
        if isinstance(interval, CheckpointInterval) and interval.steps is not None:
            due = self.policy.last_step + interval.steps
        else:
            wait = self.policy.last_time + self.policy.interval_seconds() - self.t
            due = self.timeline.step_reaching(self.step, max(0.0, wait))
        due = max(self.step + 1, min(due, total))
        while due < total:
            self.clock.set(max(self.clock.now(), self.t + self.timeline.seconds(self.step, due)))
            if self.policy.due(due):  # the real policy decides; the search above only finds the candidate
                break
            due += 1
        return due

    def _save(self, step: int, final: bool) -> None:
        wait = 0.0
        if self.inflight is not None:  # one save in flight at a time: wait for it, then it has committed
            wait = max(0.0, self.inflight[1] - self.t)
            self.committed, self.committed_measure, self.inflight = self.inflight[0], self.inflight[2], None
            self.durable = self.committed
        stall = wait + (self.costs.save_s if final else self.costs.stall_s)
        started = self.t + wait
        self.t += stall
        self.save_steps.append(step)
        self.stall_prefix.append(self.stall_prefix[-1] + stall)
        if final:
            self.finishing_at = self.t
            return
        self.clock.set(max(self.clock.now(), self.t))
        self.inflight = (
            step,
            started + self.costs.save_s,
            self.policy.measured(),
            started + self.costs.restorable_after_s(),
        )
        self.policy.saved(step, stall, self.costs.save_s)

    def _commit_by(self, when: float) -> None:
        """The save in flight is restorable once committed in memory, and over once committed to storage."""
        if self.inflight is None:
            return
        if self.inflight[3] <= when:
            self.committed, self.committed_measure = self.inflight[0], self.inflight[2]
        if self.inflight[1] <= when:
            self.durable, self.inflight = self.inflight[0], None

    # ------------------------------------------------------------------ endings

    def lose(self, at: float, why: str) -> None:
        """Its workers are gone at ``at`` (call ``advance(at)`` first). A save-and-stop under way is lost
        with them, but the step it was finishing counts if it ended."""
        if self.pending_stop is not None:
            if self.pending_stop["step_end"] <= at:
                self.step, self.t = self.pending_stop["step"], self.pending_stop["step_end"]
            self.pending_stop = None
        self._commit_by(at)
        self.finishing_at = None
        self.outcome = Outcome("failed", at, self.step, why, infrastructure=True)

    def save_and_stop(self, now: float, deadline: float, why: str, status: str = "stopped") -> float | None:
        """Finish the step in progress, save it (blocking) and stop: the time it will have stopped, or
        None (nothing changes) if the save cannot commit by ``deadline`` or a stop is already under way.
        ``complete_stop`` applies it at that time; ``lose`` before then abandons it."""
        if (
            self.outcome is not None
            or self.finishing_at is not None
            or self.pending_stop is not None
            or now < self.ready_at
        ):
            return None
        step = min(self.step + 1, self.timeline.total_steps)
        step_end = self.t + self.timeline.seconds(self.step, step)
        wait = max(0.0, self.inflight[1] - step_end) if self.inflight else 0.0
        ends = step_end + wait + self.costs.save_s
        if ends > deadline:
            return None
        self.pending_stop = {
            "ends": ends,
            "step": step,
            "step_end": step_end,
            "stall": wait + self.costs.save_s,
            "why": why,
            "status": status,
        }
        return ends

    def complete_stop(self) -> None:
        stop, self.pending_stop = self.pending_stop, None
        self.step, self.inflight = stop["step"], None
        self.save_steps.append(stop["step"])
        self.stall_prefix.append(self.stall_prefix[-1] + stop["stall"])
        self.t = stop["ends"]
        self.committed, self.committed_measure = stop["step"], self.policy.measured()
        self.durable = stop["step"]
        self.outcome = Outcome(stop["status"], stop["ends"], stop["step"], stop["why"])

    def stop(self, at: float) -> None:
        self._commit_by(at)
        self.outcome = Outcome("stopped", at, self.step)

    # ------------------------------------------------------------------ for the ledger

    def step_records(self) -> list[dict]:
        """The attempt's steps folded into one record per phase and per side of the committed step."""
        tl, start, end = self.timeline, self.start_step, self.step
        if end <= start:
            return []
        cuts = {end}
        cuts.update(int(e) for e in tl.phase_end if start < e < end)
        if start < self.committed < end:
            cuts.add(self.committed)
        if self.redo_until is not None and start < self.redo_until < end:
            cuts.add(self.redo_until)
        records, previous = [], start
        for cut in sorted(cuts):
            stall_before = self._stall_through(previous)
            stall_through = self._stall_through(cut)
            records.append(
                {
                    "step": cut,
                    "wall_time": self.ready_at + tl.seconds(start, cut) + stall_through,
                    "step_time_s": tl.seconds(previous, cut),
                    "checkpoint_stall_s": stall_through - stall_before,
                    "phase": tl.phase_names[tl.phase_of(cut)],
                    "tokens": float(tl.tokens[cut]),
                    "steps_folded": cut - previous,
                }
            )
            previous = cut
        if records and self.redo_until is not None:
            records[0]["redo_until"] = self.redo_until  # as a runner records it (``control/runner.py``)
        return records

    def _stall_through(self, step: int) -> float:
        """Stall of every save taken at or before ``step``."""
        return self.stall_prefix[bisect.bisect_right(self.save_steps, step)]
