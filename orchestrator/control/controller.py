"""The controller: one idempotent reconcile pass at a time over the persisted jobs.

Each pass (1) turns what runners recorded (outcomes, first steps) into state transitions,
(2) passes cancel and preemption requests on to runners, and (3) asks the pure scheduler what to
place, what waits (and why) and what to preempt. Everything it knows comes from the state store,
the node provider and the launcher, so a restarted controller reaches the same decisions, and the
simulator can run this same code with a simulated clock, provider and launcher.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from typing import TYPE_CHECKING, Callable

from orchestrator.clock import Clock, SystemClock
from orchestrator.cluster.placement import JobView, schedule
from orchestrator.cluster.provider import NodeProvider, NodeView, Provisioning, Retiring
from orchestrator.control.failures import BACKOFF, RESTART, backoff_s
from orchestrator.control.launcher import Launcher
from orchestrator.control.notices import taken_with_notice
from orchestrator.control.restart_budget import Refusal, refuse_restart, restart_kind, window_s
from orchestrator.control.spares import spare_shortfall, spare_surplus
from orchestrator.ledger.book import holds_for
from orchestrator.ledger.budget import WARN_AT, check
from orchestrator.ledger.report import closing_intervals, cost_report
from orchestrator.lifecycle import (
    ACTIVE,
    ENDINGS,
    HOLDING,
    Directive,
    Ending,
    FailureReason,
    JobState,
    NodeState,
    OutcomeStatus,
    Owner,
)
from orchestrator.spec.schema import JobSpec
from orchestrator.state.records import JobRecord, RunnerOutcome
from orchestrator.state.store import EventRecord, StaleState, StateStore

if TYPE_CHECKING:
    from orchestrator.state.lease import Lease

log = logging.getLogger(__name__)
S = JobState
START_GRACE_S = 30.0  # a runner just started may not be visible yet
CANCEL_GRACE_S = 60.0  # after this, a cancelled job's runner is killed rather than asked
# A job preempted for a higher-priority one saves first only if the save commits by now + this
# (the runner abandons a save that cannot); past it the victim is told to stop, so a slow or hung
# save never holds the nodes the other job is waiting for.
PREEMPT_GRACE_S = 300.0
# While no job is active the leader prepares the cluster again this often (``Launcher.prepare``): the
# warm pool's processes end when their keep-alive does and a node that joins later has none; a node
# whose part still waits is skipped (``train/warm_pool.py: fill``), so a pass that finds the pool whole
# asks for nothing.
PREPARE_EVERY_S = 120.0


def allowed_pools(spec: JobSpec, include_spares: bool = False) -> tuple[str, ...]:
    """The pools a gang may be placed in, in preference order (spare pools only for a recovering job)."""
    names = [p.name for p in spec.resources.pools if p.kind != "spare"]
    if include_spares:
        names += [p.name for p in spec.resources.pools if p.kind == "spare"]
    return tuple(names)


def job_view(job: JobRecord, include_spares: bool = False, unsaved_s: float = 0.0) -> JobView:
    return JobView(
        id=job.id,
        team=job.team,
        priority=job.priority,
        submitted_at=job.submitted_at,
        nodes=job.nodes,
        devices_per_node=job.devices_per_node,
        pools=allowed_pools(job.spec, include_spares),
        assigned=tuple(job.assignment or ()),
        unsaved_s=unsaved_s,
    )


class LostLeadership(RuntimeError):
    """This controller's lease ran out mid-pass: it must stop acting (another may lead now)."""


class ControllerCore:
    """Reconciles the jobs its control plane owns (``Owner.RAY``); rows another control plane owns
    (a RayJob on Kubernetes) are never touched here."""

    owner = Owner.RAY

    def __init__(
        self,
        store: StateStore,
        provider: NodeProvider,
        launcher: Launcher,
        clock: Clock | None = None,
        ledger_by_pool: bool = False,
        fence: Callable[[], bool] | None = None,
    ):
        self.store, self.provider, self.launcher = store, provider, launcher
        self.clock = clock or SystemClock()
        self.ledger_by_pool = ledger_by_pool  # one ledger row per pool rather than per node
        self.fence = fence  # with leader election: whether this controller still leads (checked before each move)
        self._node_states: dict[str, dict] | None = None  # as last recorded in node_history (read once)
        self._spare_record: tuple[dict[str, int], list[str], int] = ({}, [], 0)  # see _spares_added
        self._node_views: list[NodeView] = []  # the provider's list last recorded from
        self._lost_gangs: dict[str, tuple[float, frozenset[str]]] = {}  # job -> (lost at, its gang): ``_settling``
        self._prepare_due = False  # this controller took the lead and has not prepared the cluster yet: ``lead``
        self._prepared_at: float | None = None  # when it last did (``reconcile``: again every ``PREPARE_EVERY_S``)

    def lead(self) -> None:
        """This controller took the lead: only a leader launches, so only it prepares the cluster for
        launches (a standby holds no warm pool, ``Launcher.prepare``), at its first pass with no job
        active and every ``PREPARE_EVERY_S`` while none is. A job placed at once (`make run` starts the
        cluster and submits) starts its own processes; a pool asked beside them took the same cores: on
        this machine its first step came 66 s after placing began instead of 33-36 s, one run each."""
        self._prepare_due, self._prepared_at = True, None

    def reconcile(self) -> None:
        nodes = self.provider.nodes()
        self.record_nodes(nodes)
        jobs, stale = self.store.jobs(ACTIVE, owner=self.owner), False
        for job in jobs:
            try:
                self._reconcile_job(job)
            except StaleState:
                stale = True  # moved by someone else meanwhile: read them all again before scheduling
        # each move updated its record in place, so the list is current unless something was stale
        active = self.store.jobs(ACTIVE, owner=self.owner) if stale else [j for j in jobs if not j.state.is_terminal]
        self._schedule(active, nodes)
        self._keep_spares(active, nodes)
        if not active and (self._prepare_due or self._prepare_again()):
            self._prepare_due, self._prepared_at = False, self.clock.now()
            self.launcher.prepare()

    def _prepare_again(self) -> bool:
        return self._prepared_at is not None and self.clock.now() >= self._prepared_at + PREPARE_EVERY_S

    def record_nodes(self, nodes: list[NodeView]) -> None:
        """Append to ``node_history`` each node that changed between up, cordoned, down and gone since
        the last pass (the one writer of it): cluster utilisation is computed from these changes. Each
        reconcile pass calls it; the simulator also calls it when a node joins without a pass."""
        if len(nodes) == len(self._node_views) and all(map(operator.is_, nodes, self._node_views)):
            return  # the very same views as last time (a provider that keeps them, like the simulator's)
        self._node_views = list(nodes)
        if self._node_states is None:
            self._node_states = self.store.latest_node_states()
        known, changes = self._node_states, []
        listed = set()
        for node in nodes:
            listed.add(node.name)
            state = NodeState.DOWN if not node.alive else NodeState.CORDONED if node.cordoned else NodeState.UP
            last = known.get(node.name)
            if last is None or last["state"] != state or last["pool"] != node.pool:
                changes.append(
                    {
                        "name": node.name,
                        "pool": node.pool,
                        "pool_kind": node.pool_kind,
                        "devices": node.devices,
                        "state": state.value,
                    }
                )
        for name, last in known.items():
            if name not in listed and last["state"] != NodeState.GONE:
                changes.append(
                    {**{k: last[k] for k in ("name", "pool", "pool_kind", "devices")}, "state": NodeState.GONE.value}
                )
        if changes:
            self.store.record_node_changes(changes)
            known.update({c["name"]: c for c in changes})

    def _keep_spares(self, jobs: list[JobRecord], nodes: list[NodeView]) -> None:
        """Ask the provider for the hot spares the jobs are short of (providers that can provision),
        and retire the ones orch added that no job needs any more (providers that can retire)."""
        if not isinstance(self.provider, Provisioning):
            return
        coming = self.provider.coming()
        for pool, (kind, count) in spare_shortfall(jobs, nodes, coming).items():
            devices = max(j.devices_per_node for j in jobs)
            names = self.provider.provision(pool, kind, count, devices)
            self.store.add_event(
                "node.provisioned",
                f"{pool}: {count} hot spare(s) requested ({', '.join(names)})",
                data={"pool": pool, "nodes": names, "count": count},
            )
        if isinstance(self.provider, Retiring):
            self._retire_spares(jobs, nodes, coming)

    def _retire_spares(self, jobs: list[JobRecord], nodes: list[NodeView], coming: dict[str, int]) -> None:
        """Retire surplus spares (``control/spares.py``); the ``node.provisioned``/``node.retired``
        events are the record of what orch added, so a restarted controller knows it too."""
        added, provisioned = self._spares_added()
        if not any(count > 0 for count in added.values()):
            return
        retired = False
        for node in spare_surplus(jobs, nodes, coming, added, provisioned):
            reason = "surplus hot spare: no job needs it"
            if self.provider.retire(node.name, reason):
                retired = True
                self.store.add_event(
                    "node.retired",
                    f"{node.name}: retired from {node.pool} ({reason})",
                    data={"pool": node.pool, "nodes": [node.name], "count": 1},
                )
            else:
                log.info("the provider refused to retire %s (busy); trying again next pass", node.name)
        if retired:  # it stops being billed now, not at the next pass (utilisation reads node_history)
            self.record_nodes(self.provider.nodes())

    def _spares_added(self) -> tuple[dict[str, int], list[str]]:
        """Nodes orch added to each pool less those it retired, and the names it added (oldest first),
        read from the events after the ones already read (all of them after a restart)."""
        added, provisioned, after = self._spare_record
        for event in self.store.events_of(("node.provisioned", "node.retired"), after_id=after):
            data = event["data"] or {}
            sign = 1 if event["kind"] == "node.provisioned" else -1
            added[data["pool"]] = added.get(data["pool"], 0) + sign * int(data.get("count", len(data["nodes"])))
            provisioned += data["nodes"] if sign > 0 else []
            after = event["id"]
        self._spare_record = (added, provisioned, after)
        return added, provisioned

    # ------------------------------------------------------------------ one job

    def _move(self, job: JobRecord, to: JobState, reason: str, kind: str, data: dict | None = None, **updates) -> None:
        """Transition the job; when the move releases its devices, the attempt's ledger intervals
        are written in the same transaction (``data``: more fields for the event)."""
        if self.fence is not None and not self.fence():
            raise LostLeadership(f"lease lost before moving {job.id} to {to.value}")
        extra, at = None, self.clock.now()
        if job.assignment and (to.is_terminal or to in (S.PREEMPTED, S.RECOVERING)):
            # a checkpoint-and-stop that restarts (a node's notice) ended cleanly: no step was under way
            stopped = to == S.RECOVERING and job.state == S.CHECKPOINTING
            intervals = self._attempt_intervals(job, Ending.STOPPED if stopped else ENDINGS[to], at)
            extra = lambda conn, now: self.store.insert_intervals(conn, job.team, intervals)  # noqa: E731
        self.store.transition(
            job.id,
            job.state,
            to,
            reason,
            updates=updates,
            events=[EventRecord(kind, f"{job.id}: {reason}", {"state": to.value, **(data or {})})],
            extra=extra,
            at=at,
        )
        job.apply(state=to, **updates)
        if to.is_terminal:
            self._forget(job)

    def _forget(self, job: JobRecord) -> None:
        """What the job's attempts left on the nodes goes with it (best effort: the move is recorded)."""
        try:
            self.launcher.forget(job)
        except Exception as exc:  # noqa: BLE001 - a holder or the cluster being unreachable must not stop the loop
            log.warning("%s: its checkpoint copies in peer memory could not be freed: %s", job.id, exc)

    def _attempt_intervals(self, job: JobRecord, ending: Ending, at: float) -> list:
        return closing_intervals(self.store, job, ending, at, by_pool=self.ledger_by_pool)

    def _reconcile_job(self, job: JobRecord) -> None:
        state = job.state
        if state in (S.QUEUED, S.PREEMPTED) and job.cancel_requested:
            return self._move(job, S.CANCELLED, "cancelled by user", "job.cancelled")
        if state == S.PREEMPTED:
            return self._move(
                job,
                S.QUEUED,
                "requeued after preemption",
                "job.requeued",
                preempt_requested=False,
                preempt_deadline=None,
                assignment=None,
            )
        if state not in HOLDING:
            return None
        if state == S.RECOVERING and not job.assignment:
            if job.cancel_requested:
                self._move(job, S.CANCELLED, "cancelled by user", "job.cancelled")
            return None  # waiting for the scheduler to place it again
        outcome = job.current_outcome
        if outcome is not None:
            self.launcher.release(job)
            return self._finish_attempt(job, outcome)
        status = self.launcher.status(job)
        if status is None:
            return self._runner_missing(job)
        if state == S.PLACING and status.phase == "running":
            self._move(
                job,
                S.RUNNING,
                f"training on {', '.join(job.assignment)}",
                "job.running",
                started_at=job.started_at or self.clock.now(),
                failure_reason=None,
            )
            state = S.RUNNING
        if job.cancel_requested:
            if self.clock.now() - (job.cancel_requested_at or 0) > CANCEL_GRACE_S:
                self.launcher.release(job)
                return self._move(
                    job, S.CANCELLED, "cancelled by user (workers killed after the grace period)", "job.cancelled"
                )
            return self.launcher.request(job, Directive.STOP)
        if job.preempt_requested and state == S.RUNNING:
            self.launcher.request(job, Directive.CHECKPOINT_STOP, job.preempt_deadline)
            self._move(job, S.CHECKPOINTING, "checkpointing before preemption", "job.checkpointing")
        elif state == S.CHECKPOINTING and job.preempt_deadline is not None and self.clock.now() > job.preempt_deadline:
            self.launcher.request(job, Directive.STOP)  # its save did not commit in time: stop now
        return None

    def _finish_attempt(self, job: JobRecord, outcome: RunnerOutcome) -> None:
        if outcome.status == OutcomeStatus.SUCCEEDED:
            return self._move(job, S.SUCCEEDED, f"finished at step {outcome.step}", "job.succeeded")
        if job.cancel_requested:
            return self._move(job, S.CANCELLED, "cancelled by user", "job.cancelled")
        if outcome.status == OutcomeStatus.STOPPED and job.preempt_requested:
            going = taken_with_notice(self.store, job)
            if going is not None:  # checkpointed on a node's notice: restart like after a loss (spares allowed)
                return self._recover(job, f"checkpointed at step {outcome.step} on notice: {going} is being taken away")
            if job.state != S.CHECKPOINTING:
                self._move(job, S.CHECKPOINTING, "checkpointing before preemption", "job.checkpointing")
            return self._move(job, S.PREEMPTED, f"preempted at step {outcome.step}", "job.preempted", assignment=None)
        error = (outcome.error or outcome.status.value).strip().splitlines()[-1][:500]
        failure = outcome.failure
        crash = failure == FailureReason.TRAINING_ERROR and job.spec.fault_tolerance.restart_budget is not None
        if crash:  # the job's own error: restarted only within restart_budget.crash_restarts
            return self._recover(job, f"attempt {job.attempt} crashed: {error}", failure)
        if failure is not None and failure not in RESTART:
            what = "training failed" if failure == FailureReason.TRAINING_ERROR else f"{failure.value}"
            return self._move(
                job, S.FAILED, f"{what}: {error}", "job.failed", failure_reason=failure.value, message=error
            )
        if failure in BACKOFF:
            return self._recover(
                job, f"attempt {job.attempt} failed on its checkpoints ({failure.value}): {error}", failure
            )
        return self._recover(job, f"attempt {job.attempt} lost its workers: {error}", lost=True)

    def _runner_missing(self, job: JobRecord) -> None:
        if job.state == S.PLACING and self.clock.now() - job.updated_at < START_GRACE_S:
            return None
        return self._recover(job, f"the runner of attempt {job.attempt} is gone", lost=True)

    def _recover(self, job: JobRecord, reason: str, failure: FailureReason | None = None, lost: bool = False) -> None:
        """Restart from the last committed checkpoint (a new attempt starts afresh: any preemption
        request was about the attempt that is gone). After a storage or commit failure the restart
        waits ``backoff_s`` (the scheduler skips the job until then); the reason stays on the job
        until it runs again. ``lost``: the attempt lost its workers (``_settling``)."""
        self.launcher.release(job)
        if lost and job.assignment:
            self._lost_gangs[job.id] = (self.clock.now(), frozenset(job.assignment))
        kind = restart_kind(failure)
        refusal = self._refuse_restart(job, kind)
        if refusal is not None:
            return self._move(
                job,
                S.FAILED,
                f"{reason}; {refusal.detail}",
                "job.failed",
                failure_reason=refusal.reason.value,
                message=f"{reason}; {refusal.detail}",
            )
        extra = {}
        if failure is not None:
            wait = backoff_s(job.restarts + 1) if failure in BACKOFF else 0.0
            reason += f"; restarting from the last good checkpoint after {wait:.0f} s" if wait else ""
            extra = {"failure_reason": failure.value, "message": reason}
        return self._move(
            job,
            S.RECOVERING,
            reason,
            "job.recovering",
            data={"restart": kind},
            restarts=job.restarts + 1,
            assignment=None,
            preempt_requested=False,
            preempt_deadline=None,
            **extra,
        )

    def _refuse_restart(self, job: JobRecord, kind: str) -> Refusal | None:
        """The restart budget's verdict (``control/restart_budget.py``) on one more restart of ``kind``:
        the earlier restarts inside the window come from the job's ``job.recovering`` events."""
        ft = job.spec.fault_tolerance
        window = window_s(ft)
        earlier = (
            [k for _, k in self.store.restarts_since(job.id, self.clock.now() - window)] if window is not None else []
        )
        return refuse_restart(ft, kind, earlier, job.restarts)

    def _backing_off(self, job: JobRecord) -> bool:
        """A job recovering from a storage or commit failure waits out its backoff before placement."""
        if job.state != S.RECOVERING or job.failure_reason not in {f.value for f in BACKOFF}:
            return False
        since = self.store.last_transition_at(job.id, S.RECOVERING) or 0.0
        return self.clock.now() < since + backoff_s(job.restarts)

    def _settling(self, job: JobRecord, nodes: list[NodeView]) -> bool:
        """A gang that lost its workers waits until the node view has caught up with the loss: a node's
        workers die at once, but the provider may list it alive a while longer (``death_lag_s``: Ray's
        health check), and a gang placed meanwhile lands on the dead node again and fails a second time.
        It waits until a node of the lost gang is seen down, or the lag has passed."""
        lag = getattr(self.provider, "death_lag_s", 0.0)
        entry = self._lost_gangs.get(job.id)
        if entry is None:
            return False
        since, gang = entry
        if not lag or self.clock.now() >= since + lag or any(not n.alive for n in nodes if n.name in gang):
            del self._lost_gangs[job.id]
            return False
        return True

    # ------------------------------------------------------------------ scheduling

    def _schedule(self, jobs: list[JobRecord], nodes: list[NodeView]) -> None:
        waiting = [
            j
            for j in jobs
            if j.state == S.QUEUED
            or (
                j.state == S.RECOVERING
                and not j.assignment
                and not self._backing_off(j)
                and not self._settling(j, nodes)
            )
        ]
        if not waiting:
            return
        waiting = self._admit(waiting)
        if not waiting:
            return
        holding = [j for j in jobs if j.state in HOLDING and j.assignment]
        by_id = {j.id: j for j in waiting}
        queue = [job_view(j, include_spares=j.state == S.RECOVERING) for j in waiting]
        running = [job_view(j, unsaved_s=self._unsaved_s(j)) for j in holding]
        decisions = schedule(queue, running, nodes, self.store.team_quotas())
        for place in decisions.place:
            job = by_id[place.job_id]
            attempt = job.attempt + 1
            holds = holds_for(list(place.nodes), job.devices_per_node, {n.name: n for n in nodes}, job.spec)
            self._move(
                job,
                S.PLACING,
                f"placed on {', '.join(place.nodes)} (attempt {attempt})",
                "job.placed",
                assignment=list(place.nodes),
                attempt=attempt,
                message=None,
                holds=holds,
            )
            self.launcher.start(job, attempt)
        for wait in decisions.wait:
            job = by_id[wait.job_id]
            if job.message != wait.reason:
                self.store.set_wait_reason(job.id, wait.reason, EventRecord("job.waiting", f"{job.id}: {wait.reason}"))
        deadline = self.clock.now() + PREEMPT_GRACE_S
        for preempt in decisions.preempt:
            for victim in preempt.victims:
                self.store.request_preempt(
                    victim, f"preempted for {preempt.job_id}", "orch", deadline=deadline, data={"for": preempt.job_id}
                )

    def _unsaved_s(self, job: JobRecord) -> float:
        """Seconds the holding job has trained since its newest committed checkpoint (or since this
        attempt was placed, if it committed none since): what a preemption would lose."""
        since = max(
            self.store.last_event_at(job.id, "checkpoint.committed") or 0.0,
            self.store.last_transition_at(job.id, S.PLACING) or 0.0,
        )
        return max(0.0, self.clock.now() - since)

    def _admit(self, waiting: list[JobRecord]) -> list[JobRecord]:
        """Budgets are checked at admission: past a team's budget nothing new is placed; a job past
        its own budget fails."""
        teams = self.store.teams()
        budgeted = [
            j
            for j in waiting
            if (
                j.spec.cost.budget_gpu_hours
                or j.spec.cost.budget_usd
                or teams.get(j.team, {}).get("budget_gpu_hours")
                or teams.get(j.team, {}).get("budget_usd")
            )
        ]
        if not budgeted:
            return waiting
        report = cost_report(self.store, now=self.clock.now())
        self._warn_budgets(teams, report)
        per_job = {r["job"]: r for r in report["per_job"]}
        admitted = []
        for job in waiting:
            team = teams.get(job.team, {})
            spent = report["by_team"].get(job.team, {"gpu_hours": 0.0, "cost_usd": 0.0})
            team_check = check(
                spent["gpu_hours"],
                spent["cost_usd"],
                team.get("budget_gpu_hours"),
                team.get("budget_usd"),
                f"team {job.team}",
            )
            mine = per_job.get(job.id)
            job_check = (
                check(
                    mine["gpu_hours"]["total"],
                    mine["cost_usd"],
                    job.spec.cost.budget_gpu_hours,
                    job.spec.cost.budget_usd,
                    "job",
                )
                if mine
                else None
            )
            if job_check is not None and job_check.over:
                self._move(
                    job,
                    S.FAILED,
                    job_check.reason,
                    "job.failed",
                    failure_reason=FailureReason.BUDGET_EXCEEDED.value,
                    message=job_check.reason,
                )
            elif team_check.over:
                if job.message != team_check.reason:
                    self.store.set_wait_reason(
                        job.id,
                        team_check.reason,
                        EventRecord("budget.exceeded", f"{job.id}: waits: {team_check.reason}"),
                    )
            else:
                admitted.append(job)
        return admitted

    def _warn_budgets(self, teams: dict, report: dict) -> None:
        """Record once per team and threshold (80%, 100%) that its spend crossed it."""
        warned = {
            (e["data"] or {}).get("team"): (e["data"] or {}).get("threshold", 0)
            for e in self.store.events(limit=100_000)
            if e["kind"] == "budget.warning"
        }
        for name, team in teams.items():
            spent = report["by_team"].get(name, {"gpu_hours": 0.0, "cost_usd": 0.0})
            result = check(
                spent["gpu_hours"],
                spent["cost_usd"],
                team.get("budget_gpu_hours"),
                team.get("budget_usd"),
                f"team {name}",
            )
            for threshold in WARN_AT:
                if result.fraction >= threshold > warned.get(name, 0):
                    self.store.add_event(
                        "budget.warning",
                        f"{result.reason} ({threshold:.0%} reached)",
                        data={"team": name, "threshold": threshold},
                    )
                    warned[name] = threshold


class ControllerLoop:
    """Runs ``ControllerCore.reconcile`` every ``interval`` seconds in a background thread, and at once
    when woken (``wake``: a runner recorded its attempt's outcome, so a lost gang is restarted without
    waiting out the rest of the interval).

    With a ``lease`` (leader election), a pass runs only while this controller holds it; the others
    wait as standbys, renewing nothing, and take over once the leader's lease expires."""

    def __init__(self, core: ControllerCore, interval: float = 1.0, lease: "Lease | None" = None):
        self.core, self.interval, self.lease = core, interval, lease
        self.passes, self.errors, self.last_error, self.standby_passes = 0, 0, "", 0
        self.leading_term: int | None = None
        if lease is not None:
            core.fence = lease.still_held
        self._stop, self._woken = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="orch-controller", daemon=True)

    def start(self) -> None:
        if self.lease is None:  # no election: this controller leads from the start
            self.core.lead()
        self.thread.start()

    def wake(self) -> None:
        """Run the next pass now (or right after the one under way) instead of at the interval."""
        self._woken.set()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        self._woken.set()
        if release and self.lease is not None:
            self.thread.join(timeout=30)
            self.lease.release()

    def _leads(self) -> bool:
        if self.lease is None:
            return True
        if not self.lease.acquire():
            if self.leading_term is not None:
                log.warning("controller %s lost the lease", self.lease.holder)
            self.leading_term = None
            self.standby_passes += 1
            return False
        if self.lease.term != self.leading_term:
            self.leading_term = self.lease.term
            self.core.store.add_event(
                "controller.leader",
                f"{self.lease.holder} leads (term {self.lease.term})",
                data={"holder": self.lease.holder, "term": self.lease.term},
            )
            self.core.lead()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._leads():
                    self.core.reconcile()
                    self.passes += 1
            except LostLeadership as exc:
                log.warning("%s", exc)
            except Exception as exc:  # keep reconciling: one bad pass must not stop the control plane
                self.errors += 1
                self.last_error = repr(exc)
                log.exception("reconcile pass failed")
                try:
                    self.core.store.add_event("controller.error", f"reconcile pass failed: {exc!r}")
                except Exception:
                    log.exception("could not record the error")
            self._woken.wait(self.interval)
            self._woken.clear()

    def stats(self) -> dict:
        return {
            "passes": self.passes,
            "errors": self.errors,
            "last_error": self.last_error,
            "time": time.time(),
            "leading": self.lease is None or self.leading_term is not None,
            "standby_passes": self.standby_passes,
            "holder": self.lease.holder if self.lease else None,
        }
