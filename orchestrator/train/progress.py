"""Where a run is: step, phase, tokens and data position; and what the next step looks like.

Shared by the distributed trainer and the single-process reference so both take identical steps
(batch from the ramp, sequence length from the phase, learning rate from the schedule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from orchestrator.plan.schedule import BatchSchedule, learning_rate, phase_tokens
from orchestrator.spec.schema import JobSpec, scheduled


@dataclass
class Progress:
    step: int = 0  # optimizer steps completed
    phase: int = 0  # index into spec.phases
    phase_steps: int = 0
    phase_tokens: float = 0.0
    tokens: float = 0.0  # in all phases
    data_position: int = 0  # tokens consumed from the data stream, over all phases (windows of sample_len)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Progress":
        return cls(**data)


@dataclass(frozen=True)
class StepShape:
    phase: str
    global_batch: int
    seq_len: int
    sample_len: int  # seq_len + 1 + mtp_depth tokens per sample
    lr: float
    mtp_weight: float  # the MTP loss weight in force (spec: training.mtp_loss_weight_schedule)


class Schedule:
    """Turns a spec and a data-parallel degree into the shape of each step."""

    def __init__(self, spec: JobSpec, data_parallel: int):
        self.spec = spec
        granularity = data_parallel * spec.parallelism.micro_batch_size
        self.batches = [BatchSchedule.for_phase(p, granularity) for p in spec.phases]

    def finished(self, progress: Progress) -> bool:
        return progress.phase >= len(self.spec.phases)

    def next_step(self, progress: Progress) -> StepShape:
        phase = self.spec.phases[progress.phase]
        batch = self.batches[progress.phase].batch_at(progress.phase_tokens)
        lr = learning_rate(self.spec.training.lr_schedule, progress.step, progress.tokens)
        training = self.spec.training
        mtp_weight = scheduled(training.mtp_loss_weight, training.mtp_loss_weight_schedule, progress.tokens)
        return StepShape(
            phase.name, batch, phase.seq_len, phase.seq_len + 1 + self.spec.model.mtp_depth, lr, mtp_weight
        )

    def bias_update_speed(self, progress: Progress) -> float:
        """The balance bias step in force at ``progress`` (spec: training.balance.bias_update_speed_schedule)."""
        balance = self.spec.training.balance
        return scheduled(balance.bias_update_speed, balance.bias_update_speed_schedule, progress.tokens)

    def advance(self, progress: Progress, shape: StepShape) -> None:
        trained = shape.global_batch * shape.seq_len
        progress.step += 1
        progress.phase_steps += 1
        progress.phase_tokens += trained
        progress.tokens += trained
        progress.data_position += shape.global_batch * shape.sample_len
        phase = self.spec.phases[progress.phase]
        done = (
            (progress.phase_steps >= phase.steps)
            if phase.steps is not None
            else progress.phase_tokens >= phase_tokens(phase)
        )
        if done:
            progress.phase += 1
            progress.phase_steps = 0
            progress.phase_tokens = 0.0
