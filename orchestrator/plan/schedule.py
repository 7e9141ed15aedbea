"""Batch-size ramp and learning-rate schedule as pure functions of progress.

The planner uses them to count steps; the training loop uses the very same functions to pick each
step's batch and learning rate, so the plan and the run agree step for step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.spec.schema import BatchRamp, LRScheduleSpec, PhaseSpec


@dataclass(frozen=True)
class BatchSchedule:
    """Sequences per step as a function of tokens already trained in the phase.

    A ramp grows linearly in tokens from ``start`` to ``end``; each value is rounded down to a
    multiple of ``granularity`` (data-parallel replicas x micro-batch) so every step divides evenly.
    """

    start: int
    end: int
    ramp_tokens: float
    granularity: int = 1

    @classmethod
    def for_phase(cls, phase: PhaseSpec, granularity: int = 1) -> "BatchSchedule":
        batch = phase.global_batch
        if isinstance(batch, BatchRamp):
            return cls(batch.start, batch.end, batch.ramp_tokens, granularity)
        return cls(batch, batch, 0.0, granularity)

    def batch_at(self, tokens_done: float) -> int:
        if self.ramp_tokens <= 0 or tokens_done >= self.ramp_tokens:
            return self.end
        raw = self.start + (self.end - self.start) * tokens_done / self.ramp_tokens
        rounded = int(raw) // self.granularity * self.granularity
        return max(self.start, rounded)

    def count_steps(self, total_tokens: float, seq_len: int) -> int:
        """Steps to train ``total_tokens``: the ramp step by step, then closed form."""
        steps, done = 0, 0.0
        while done < total_tokens and done < self.ramp_tokens:
            done += self.batch_at(done) * seq_len
            steps += 1
        if done < total_tokens:
            steps += math.ceil((total_tokens - done) / (self.end * seq_len))
        return steps


def phase_tokens(phase: PhaseSpec) -> float:
    """A phase's length in tokens, whichever way the spec gave it."""
    if phase.tokens is not None:
        return phase.tokens
    batch = phase.global_batch if isinstance(phase.global_batch, int) else phase.global_batch.end
    return float(phase.steps * batch * phase.seq_len)


def learning_rate(schedule: LRScheduleSpec, step: int, tokens_done: float) -> float:
    """DeepSeek-V3's schedule: linear warm-up over steps, hold, cosine decay, then constant tails.

    Warm-up is in steps; everything after it is placed by tokens, as in the V3 report.
    """
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return schedule.peak * (step + 1) / schedule.warmup_steps
    if tokens_done < schedule.hold_tokens:
        return schedule.peak
    into_decay = tokens_done - schedule.hold_tokens
    if schedule.decay_tokens and into_decay < schedule.decay_tokens:
        progress = into_decay / schedule.decay_tokens
        return schedule.final + 0.5 * (schedule.peak - schedule.final) * (1 + math.cos(math.pi * progress))
    into_tail = into_decay - schedule.decay_tokens
    for stage in schedule.tail:
        if into_tail < stage.tokens:
            return stage.lr
        into_tail -= stage.tokens
    return schedule.tail[-1].lr if schedule.tail else schedule.final
