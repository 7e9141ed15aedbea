"""The job lifecycle as an explicit state machine (drawn in docs/control-plane.md).

``state`` is what the orchestrator is doing with the job; ``failure_reason`` says why a job ended
badly, typed, so scripts and the ledger can act on it. Only the controller moves a job between
states, always through ``check_transition``.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "queued"  # waiting for its gang (the reason is shown)
    PLACING = "placing"  # nodes chosen, workers starting
    RUNNING = "running"  # training steps are being taken
    CHECKPOINTING = "checkpointing"  # saving before preemption or cancel
    RECOVERING = "recovering"  # workers lost; restarting from the last checkpoint
    PREEMPTED = "preempted"  # stopped for a higher-priority job; will be requeued
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_devices(self) -> bool:
        return self in HOLDING


class FailureReason(str, Enum):
    TRAINING_ERROR = "training_error"  # the workload raised
    MAX_RESTARTS = "max_restarts_exceeded"
    UNSCHEDULABLE = "unschedulable"  # can never fit the cluster
    LAUNCH_ERROR = "launch_error"  # workers could not be started
    BUDGET_EXCEEDED = "budget_exceeded"
    NODE_LOST = "node_lost"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
HOLDING = frozenset({JobState.PLACING, JobState.RUNNING, JobState.CHECKPOINTING, JobState.RECOVERING})

S = JobState
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.PLACING, S.CANCELLED, S.FAILED}),
    S.PLACING: frozenset({S.RUNNING, S.QUEUED, S.RECOVERING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.CHECKPOINTING}),
    S.RUNNING: frozenset({S.CHECKPOINTING, S.RECOVERING, S.PREEMPTED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.CHECKPOINTING: frozenset({S.RUNNING, S.PREEMPTED, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.RECOVERING}),
    S.RECOVERING: frozenset({S.PLACING, S.RUNNING, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.PREEMPTED: frozenset({S.QUEUED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: the controller tried a move the state machine forbids."""


def check_transition(current: JobState, target: JobState) -> None:
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"{current.value} -> {target.value} is not a job transition")
