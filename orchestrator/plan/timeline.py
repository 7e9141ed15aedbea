"""Each step's duration, phase and tokens over the whole run, from the plan.

A step trains ``batch x seq_len`` tokens at the phase's planned rate (peak FLOP/s x expected MFU
per device), with the batch from the same ``BatchSchedule`` the planner and the trainer use, so the
simulated steps add up to the plan's GPU-hours (to within the last step of each phase, which may
overshoot the phase's token count). Cumulative sums make "where is the run at time t" a binary
search rather than a loop over 240K steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.plan.planner import Plan
from orchestrator.plan.schedule import BatchSchedule


@dataclass(frozen=True)
class StepTimeline:
    phase_names: tuple[str, ...]
    phase_end: np.ndarray  # phase i covers steps phase_end[i-1]+1 .. phase_end[i]
    elapsed: np.ndarray  # elapsed[k]: compute seconds of steps 1..k (elapsed[0] = 0)
    tokens: np.ndarray  # tokens[k]: tokens trained by steps 1..k

    @property
    def total_steps(self) -> int:
        return int(self.phase_end[-1])

    def phase_of(self, step: int) -> int:
        """Index of the phase that step ``step`` (1-based) belongs to."""
        return int(np.searchsorted(self.phase_end, step, side="left"))

    def seconds(self, from_step: int, to_step: int) -> float:
        return float(self.elapsed[to_step] - self.elapsed[from_step])

    def steps_done_within(self, from_step: int, seconds: float) -> int:
        """The last step finished ``seconds`` of compute after ``from_step``."""
        k = int(np.searchsorted(self.elapsed, self.elapsed[from_step] + seconds + 1e-9, side="right")) - 1
        return min(max(k, from_step), self.total_steps)

    def step_reaching(self, from_step: int, seconds: float) -> int:
        """The first step after ``from_step`` that ends at least ``seconds`` of compute later."""
        k = int(np.searchsorted(self.elapsed, self.elapsed[from_step] + seconds - 1e-9, side="left"))
        return min(max(k, from_step + 1), self.total_steps)


def build_timeline(plan: Plan) -> StepTimeline:
    spec, mesh = plan.spec, plan.mesh
    granularity = mesh.data * spec.parallelism.micro_batch_size
    durations, tokens, ends = [], [], []
    for phase_spec, phase in zip(spec.phases, plan.phases):
        schedule = BatchSchedule.for_phase(phase_spec, granularity)
        rate = mesh.world_size * spec.resources.accelerator.peak_bf16_tflops * 1e12 * phase.mfu  # FLOP/s
        per_token = phase.flops_per_token / rate
        batches = np.full(phase.steps, schedule.end, dtype=np.float64)
        done, k = 0.0, 0
        while k < phase.steps and done < schedule.ramp_tokens:
            batches[k] = schedule.batch_at(done)
            done += batches[k] * phase.seq_len
            k += 1
        step_tokens = batches * phase.seq_len
        durations.append(step_tokens * per_token)
        tokens.append(step_tokens)
        ends.append(phase.steps)
    elapsed = np.concatenate([[0.0], np.cumsum(np.concatenate(durations))])
    trained = np.concatenate([[0.0], np.cumsum(np.concatenate(tokens))])
    return StepTimeline(tuple(p.name for p in plan.phases), np.cumsum(ends), elapsed, trained)
