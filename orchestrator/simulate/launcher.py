"""The simulated launcher: the controller's ``Launcher`` seam over ``SimulatedAttempt``s.

``start`` begins an attempt from the job's last committed checkpoint after the recovery sequence
of ``plan/recovery.py``: detect (after an abrupt loss), the gang's start (warm when every node
of the new gang already has workers up: it held the job before, or it waited idle for at least a cold
start, as a hot spare or a replacement that joined earlier), restore
(when resuming); what the attempt did is written to the state store the way a real
runner writes it (step metrics, progress, committed step, outcome), so the controller and the
ledger cannot tell the difference.
"""

from __future__ import annotations

from typing import Callable, Mapping

from orchestrator.checkpoint.memory import restorable_from_peers
from orchestrator.clock import ManualClock
from orchestrator.lifecycle import Directive
from orchestrator.plan.costs import RunCosts
from orchestrator.plan.timeline import StepTimeline
from orchestrator.simulate.attempt import SimulatedAttempt
from orchestrator.simulate.cluster import SimNode
from orchestrator.spec.schema import JobSpec
from orchestrator.state.records import JobRecord, RunnerStatus
from orchestrator.state.store import StateStore


class SimulatedLauncher:
    def __init__(
        self,
        store: StateStore,
        clock: ManualClock,
        spec: JobSpec,
        timeline: StepTimeline,
        costs: RunCosts,
        on_ready: Callable[[float], None],
        on_stop: Callable[[float], None],
        nodes: Mapping[str, SimNode] | None = None,
    ):
        self.store, self.clock, self.spec, self.nodes = store, clock, spec, nodes or {}
        self.timeline, self.costs, self.on_ready, self.on_stop = timeline, costs, on_ready, on_stop
        self.attempts: dict[str, SimulatedAttempt] = {}
        self.checkpoint_costs: dict[str, dict | None] = {}  # per job: as its newest checkpoint recorded them
        self.saves = 0
        self.previous: dict[str, tuple[tuple[str, ...], bool]] = {}  # per job: (last gang, lost abruptly)
        self.kept_by: dict[str, tuple[tuple[str, ...], int]] = {}  # per job: (last gang, its newest durable step)
        # what a live runner tells the interval policy (ledger/exposure.py): the job's restarts (all of the
        # infrastructure's making here: the simulator has no crashes) over the seconds its gang held nodes
        # in the attempts that ended; kept here, since reading the ledger at each start is slow at scale
        self.placed_at: dict[str, float] = {}
        self.held_s: dict[str, float] = {}

    def prepare(self) -> None:
        """Nothing to warm: simulated attempts start in their modelled times."""

    def start(self, job: JobRecord, attempt: int) -> None:
        resume = job.last_checkpoint_step or 0
        durable, redo, from_storage = resume, None, False
        if job.id in self.kept_by:
            gang, durable = self.kept_by[job.id]
            if self.costs.memory_commit_s is not None and not restorable_from_peers(
                list(gang), list(job.assignment), lambda n: n not in self.nodes or self.nodes[n].alive
            ):  # the copies in peer memory are out of the new gang's reach: object storage, and
                from_storage = True  # a step committed only in memory is trained again
                if resume > durable:
                    resume, redo = durable, resume
        ready = self.clock.now() + self.recovery_s(job, resume, from_storage)
        self.placed_at[job.id] = self.clock.now()
        self.attempts[job.id] = SimulatedAttempt(
            job.id,
            attempt,
            tuple(job.assignment),
            resume,
            ready,
            self.timeline,
            self.costs,
            self.spec,
            self.checkpoint_costs.get(job.id),
            observed=(job.restarts or 0, self.held_s.get(job.id, 0.0)),
            durable_start=min(durable, resume),
            redo_until=redo,
        )
        self.on_ready(ready)

    def recovery_s(self, job: JobRecord, resume: int, from_storage: bool = False) -> float:
        """Detect (an abrupt loss only) + the gang's start + restore (when resuming; from object storage
        when no peer of the new gang holds the copies)."""
        gang, lost = self.previous.get(job.id, ((), False))
        warm = bool(gang) and all(name in gang or self._prestarted(name) for name in job.assignment)
        detect = self.costs.detect_s if lost else 0.0
        restore = self.costs.restore_s
        if from_storage and self.costs.storage_restore_s is not None:
            restore = self.costs.storage_restore_s
        return detect + self.costs.start_s(warm) + (restore if resume else 0.0)

    def status(self, job: JobRecord) -> RunnerStatus | None:
        run = self.attempts.get(job.id)
        if run is None or run.attempt != job.attempt:
            return None
        return RunnerStatus("running" if self.clock.now() >= run.ready_at else "starting", run.attempt)

    def request(self, job: JobRecord, directive: Directive, deadline: float | None = None) -> bool:
        """Stop now, or checkpoint and stop (by ``deadline``); whether a checkpoint-and-stop was begun."""
        run = self.attempts.get(job.id)
        if run is None or run.outcome is not None or run.pending_stop is not None:
            return False  # gone, ended, or already stopping (an earlier deadline stands)
        now = self.clock.now()
        run.advance(now)
        if run.outcome is not None:
            return False
        if directive == Directive.CHECKPOINT_STOP:
            ends = run.save_and_stop(now, deadline if deadline else float("inf"), "")
            if ends is not None:
                self.on_stop(ends)
                return True
            return False  # cannot commit in time: it trains on until the node goes
        run.stop(now)
        self.record(run)
        return False

    def forget(self, job: JobRecord) -> None:
        """Nothing is kept on simulated nodes."""

    def release(self, job: JobRecord) -> None:
        run = self.attempts.pop(job.id, None)
        placed = self.placed_at.pop(job.id, None)
        if placed is not None:
            self.held_s[job.id] = self.held_s.get(job.id, 0.0) + self.clock.now() - placed
        if run is not None:
            self.saves += run.saves
            lost = run.outcome is not None and run.outcome.status == "failed" and run.outcome.infrastructure
            survivors = tuple(n for n in run.nodes if n not in self.nodes or self.nodes[n].alive)
            self.previous[job.id] = (survivors, lost)  # a node lost and replaced later starts cold
            if run.committed > run.start_step or job.id not in self.kept_by:
                # the gang that saved the newest restorable step holds its copies; an attempt that only
                # restored (and saved nothing) left them where they were
                self.kept_by[job.id] = (run.nodes, run.durable)
            self.checkpoint_costs[job.id] = run.committed_measure

    def _prestarted(self, name: str) -> bool:
        """A node that waited idle for at least a cold start (a hot spare, or a replacement that joined
        a while ago) has its workers up: they start when a node joins, not when a gang needs them."""
        node = self.nodes.get(name)
        return node is not None and self.clock.now() - node.up_since >= self.costs.restart_s

    def running(self) -> list[SimulatedAttempt]:
        return list(self.attempts.values())

    def record(self, run: SimulatedAttempt) -> None:
        """Write what the attempt did, as a runner would when its attempt ends."""
        self.store.add_metrics(run.job_id, run.attempt, run.step_records())
        self.store.record_checkpoint(run.job_id, run.committed or None, announce=False)
        self.store.record_outcome(run.job_id, run.outcome.as_outcome(run.attempt))
