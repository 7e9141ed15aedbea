"""Typed records that cross the state store's boundary (what its tables hold, as Python values).

Plain dataclasses with no database code, so the ledger's pure functions and the controller can
build and read them without SQLAlchemy: ``JobRecord`` (a job, its spec parsed), ``RunnerStatus`` and
``RunnerOutcome`` (what the real runner and the simulator's launcher report), ``Interval`` (a ledger row).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from orchestrator.lifecycle import Directive, FailureReason, JobState, OutcomeStatus, Owner

if TYPE_CHECKING:
    from orchestrator.spec.schema import JobSpec


@dataclass(frozen=True)
class Interval:
    """One ledger row: ``devices`` of one node (or pool) of one attempt, in one category, from
    ``start`` to ``end``, at the price recorded when the node was placed."""

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
class RunnerStatus:
    """What a live attempt's runner says when the controller asks (the real ``JobRunner`` and the
    simulator's launcher answer alike)."""

    phase: str  # starting | running | done
    attempt: int
    step: int = 0
    directive: str = Directive.CONTINUE


@dataclass(frozen=True)
class RunnerOutcome:
    """How an attempt ended, as its runner saw the workload end (the ``jobs.outcome`` column). The
    controller turns it into a transition; the runner never moves a job's state itself."""

    attempt: int
    status: OutcomeStatus
    step: int = 0
    error: str | None = None
    infrastructure: bool = False  # a failure the job restarts after (nodes, workers, checkpoint storage)
    directive: str | None = None  # the directive a stopped attempt obeyed
    failure_reason: FailureReason | None = None  # the class of a failure (control/failures.py)

    @classmethod
    def from_row(cls, row: dict | None) -> RunnerOutcome | None:
        if not row:
            return None
        reason = row.get("failure_reason")
        return cls(
            attempt=row["attempt"],
            status=OutcomeStatus(row["status"]),
            step=row.get("step") or 0,
            error=row.get("error"),
            infrastructure=bool(row.get("infrastructure")),
            directive=row.get("directive"),
            failure_reason=FailureReason(reason) if reason else None,
        )

    @property
    def failure(self) -> FailureReason | None:
        """The failure class of a failed attempt (older runners wrote only ``infrastructure``)."""
        if self.status != OutcomeStatus.FAILED:
            return None
        if self.failure_reason is not None:
            return self.failure_reason
        return FailureReason.NODE_LOST if self.infrastructure else FailureReason.TRAINING_ERROR

    def as_row(self) -> dict:
        """The JSON stored (keys absent when empty, as runners always wrote it)."""
        row: dict = {"attempt": self.attempt, "status": self.status.value, "step": self.step}
        if self.error:
            row["error"] = self.error
        if self.infrastructure:
            row["infrastructure"] = True
        if self.directive:
            row["directive"] = str(self.directive)
        if self.failure_reason is not None:
            row["failure_reason"] = self.failure_reason.value
        return row


@dataclass
class JobRecord:
    """A job as the control plane reads it: the row's columns as typed values and the spec parsed
    (once per store: ``StateStore`` keeps the parsed ``JobSpec`` of each job it has read).

    ``spec_data`` is the stored mapping, handed to processes that parse it themselves (Ray Train
    workers). The controller updates a record in place as it moves the job (``apply``), so one pass
    works on what it wrote."""

    id: str
    name: str
    team: str
    priority: int
    state: JobState
    owner: Owner
    spec: JobSpec
    spec_data: dict
    world_size: int
    nodes: int
    devices_per_node: int
    total_steps: int
    submitted_at: float
    updated_at: float
    started_at: float | None = None
    ended_at: float | None = None
    failure_reason: str | None = None
    message: str | None = None
    step: int = 0
    tokens: float = 0.0
    loss: float | None = None
    tokens_per_s: float | None = None
    attempt: int = 0
    restarts: int = 0
    assignment: list[str] | None = None
    cancel_requested: bool = False
    cancel_requested_at: float | None = None
    preempt_requested: bool = False
    preempt_deadline: float | None = None
    outcome: RunnerOutcome | None = None
    last_checkpoint_step: int | None = None
    holds: list[dict] | None = None

    @classmethod
    def from_row(cls, row: dict, spec: JobSpec) -> JobRecord:
        values = {k: row[k] for k in _COLUMNS if k in row}
        values.update(
            state=JobState(row["state"]),
            owner=Owner(row.get("owner") or Owner.RAY),
            spec=spec,
            spec_data=row["spec"],
            outcome=RunnerOutcome.from_row(row.get("outcome")),
        )
        return cls(**values)

    def apply(self, **changes) -> None:
        """Mirror a write the caller just made (a transition's updates) onto this record."""
        for name, value in changes.items():
            if name == "state":
                value = JobState(value)
            setattr(self, name, value)

    @property
    def current_outcome(self) -> RunnerOutcome | None:
        """The outcome of the current attempt (an older attempt's is history)."""
        return self.outcome if self.outcome is not None and self.outcome.attempt == self.attempt else None


_COLUMNS = (
    "id",
    "name",
    "team",
    "priority",
    "world_size",
    "nodes",
    "devices_per_node",
    "total_steps",
    "submitted_at",
    "updated_at",
    "started_at",
    "ended_at",
    "failure_reason",
    "message",
    "step",
    "tokens",
    "loss",
    "tokens_per_s",
    "attempt",
    "restarts",
    "assignment",
    "cancel_requested",
    "cancel_requested_at",
    "preempt_requested",
    "preempt_deadline",
    "last_checkpoint_step",
    "holds",
)
