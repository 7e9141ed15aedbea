"""The job lifecycle's vocabulary, defined once: states, allowed transitions, failure reasons,
directives to workers, runner outcomes, ledger endings and categories, and control-plane owners.

A leaf: it imports nothing from orch, so every layer (``state``, ``ledger``, ``cluster``, ``train``,
``control`` and above) can use the same words. Like KubeRay's ``apis/ray/v1`` types, which never
import the controllers, this module says *what* a job can be; ``control/`` decides *when*.

``JobState`` is what the orchestrator is doing with the job; ``FailureReason`` says why a job ended
badly, typed, so scripts and the ledger can act on it. Only the controller moves a job between
states (``k8s/submit.py`` moves the rows the Kubernetes control plane owns), always through
``check_transition``. ``docs/control-plane.md`` draws ``ALLOWED`` (generated, and tested to match).
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """An enum whose members print as their value (``f"{Directive.STOP}"`` is ``stop``), so log lines
    and messages read the same as with the bare strings they replace."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


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
    CHECKPOINT_STORAGE = "checkpoint_storage"  # the checkpoint store was down or timed out: restarted
    CHECKPOINT_COMMIT = "checkpoint_commit"  # a checkpoint could not be committed: restarted
    CHECKPOINT_REFUSED = "checkpoint_refused"  # a checkpoint in a format that cannot be loaded safely


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
HOLDING = frozenset({JobState.PLACING, JobState.RUNNING, JobState.CHECKPOINTING, JobState.RECOVERING})
ACTIVE = tuple(s for s in JobState if s not in TERMINAL)

S = JobState
# Every move the state machine allows, with what makes it happen (the edge label of the diagram in
# docs/control-plane.md, which is generated from this table: see ``state_diagram``).
TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (S.QUEUED, S.PLACING): "gang fits",
    (S.QUEUED, S.CANCELLED): "cancelled",
    (S.QUEUED, S.FAILED): "over its budget",
    (S.PLACING, S.RUNNING): "first step",
    (S.PLACING, S.QUEUED): "placement given up",
    (S.PLACING, S.RECOVERING): "runner or workers lost",
    (S.PLACING, S.SUCCEEDED): "ended before a step was seen",
    (S.PLACING, S.FAILED): "training error / max restarts",
    (S.PLACING, S.CANCELLED): "cancelled",
    (S.PLACING, S.CHECKPOINTING): "stopped on a preemption request",
    (S.RUNNING, S.CHECKPOINTING): "preemption, drain or spot notice",
    (S.RUNNING, S.RECOVERING): "node or worker lost",
    (S.RUNNING, S.PREEMPTED): "saved and stopped",
    (S.RUNNING, S.SUCCEEDED): "last step",
    (S.RUNNING, S.FAILED): "training error / max restarts",
    (S.RUNNING, S.CANCELLED): "cancelled",
    (S.CHECKPOINTING, S.RUNNING): "save done, training on",
    (S.CHECKPOINTING, S.PREEMPTED): "saved and stopped",
    (S.CHECKPOINTING, S.SUCCEEDED): "last step",
    (S.CHECKPOINTING, S.FAILED): "training error / max restarts",
    (S.CHECKPOINTING, S.CANCELLED): "cancelled",
    (S.CHECKPOINTING, S.RECOVERING): "saved on a spot notice / lost while saving",
    (S.RECOVERING, S.PLACING): "re-placed (spare pools allowed)",
    (S.RECOVERING, S.RUNNING): "workers back",
    (S.RECOVERING, S.QUEUED): "requeued",
    (S.RECOVERING, S.FAILED): "max restarts exceeded",
    (S.RECOVERING, S.CANCELLED): "cancelled",
    (S.PREEMPTED, S.QUEUED): "requeued",
    (S.PREEMPTED, S.CANCELLED): "cancelled",
}
ALLOWED: dict[JobState, frozenset[JobState]] = {
    state: frozenset(to for (frm, to) in TRANSITIONS if frm == state) for state in JobState
}


class IllegalTransition(RuntimeError):
    """A bug: the controller tried a move the state machine forbids."""


def check_transition(current: JobState, target: JobState) -> None:
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"{current.value} -> {target.value} is not a job transition")


def state_diagram() -> str:
    """The Mermaid state diagram of ``TRANSITIONS`` (docs/control-plane.md holds this text; a test
    fails when the two differ)."""
    lines = ["stateDiagram-v2", "    [*] --> queued: orch submit"]
    lines += [f"    {frm.value} --> {to.value}: {label}" for (frm, to), label in TRANSITIONS.items()]
    lines += [f"    {state.value} --> [*]" for state in JobState if state in TERMINAL]
    return "\n".join(lines) + "\n"


class Directive(_Word):
    """What a job's runner tells its training workers after each step."""

    CONTINUE = "continue"
    STOP = "stop"
    CHECKPOINT_STOP = "checkpoint_stop"  # save (within a deadline, when given), then stop


DIRECTIVES = tuple(Directive)  # the order is the wire format: rank 0 broadcasts the index


class OutcomeStatus(_Word):
    """How a job attempt ended, as its runner (or the simulator) saw the workload end."""

    SUCCEEDED = "succeeded"
    STOPPED = "stopped"  # on a directive (cancel, preemption, notice)
    FAILED = "failed"  # ``infrastructure`` on the outcome says whether nodes or the code failed


class LedgerCategory(_Word):
    """Where device-hours went (``ledger/intervals.py`` says how each is cut). The one list of them:
    reports, charts and the API iterate this enum, in this order."""

    PRODUCTIVE = "productive"
    CHECKPOINT = "checkpoint"
    STARTUP = "startup"  # held while the first attempt's gang starts (waiting for devices holds none)
    RECOVERY = "recovery"
    LOST = "lost"


class RestartKind(_Word):
    """What a restart was for: the controller's restart budget counts each kind apart
    (``control/restart_budget.py``), the forecast and the interval policy count the infrastructure's."""

    INFRASTRUCTURE = "infrastructure"  # node loss, a node taken with a notice, checkpoint storage or commit
    CRASH = "crash"  # the job's own error (a training error)


class NodeState(_Word):
    """A node as the controller last saw it (``node_history``): utilisation counts ``up`` and
    ``cordoned`` as up, ``down`` as down or being replaced, and ``gone`` (no longer listed) not at all."""

    UP = "up"
    CORDONED = "cordoned"
    DOWN = "down"
    GONE = "gone"


class Ending(_Word):
    """How an attempt released its devices, which decides the category of its tail."""

    SUCCEEDED = "succeeded"
    CHECKPOINTED = "checkpointed"
    STOPPED = "stopped"  # stopped on request to restart elsewhere (a notice): nothing was under way
    LOST = "lost"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RUNNING = "running"  # not ended: priced up to now


ENDINGS: dict[JobState, Ending] = {  # the transitions that release devices, and the ending they record
    S.SUCCEEDED: Ending.SUCCEEDED,
    S.PREEMPTED: Ending.CHECKPOINTED,
    S.CHECKPOINTING: Ending.CHECKPOINTED,
    S.RECOVERING: Ending.LOST,
    S.FAILED: Ending.FAILED,
    S.CANCELLED: Ending.CANCELLED,
}


class Owner(_Word):
    """Which control plane moves a job: a job row is acted on by its owner only."""

    RAY = "ray"  # orch's controller on a Ray cluster (the embedded one, or KubeRay's via `orch controller`)
    KUBERNETES = "kubernetes"  # a RayJob created by `orch submit --target k8s`, followed by k8s/submit.py
