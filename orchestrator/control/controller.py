"""The controller: one idempotent reconcile pass at a time over the persisted jobs.

Each pass (1) turns what runners recorded (outcomes, first steps) into state transitions,
(2) passes cancel and preemption requests on to runners, and (3) asks the pure scheduler what to
place, what waits (and why) and what to preempt. Everything it knows comes from the state store,
the node provider and the launcher, so a restarted controller reaches the same decisions, and the
simulator can run this same code with a simulated clock, provider and launcher.
"""

from __future__ import annotations

import logging
import threading
import time

from orchestrator.clock import Clock, SystemClock
from orchestrator.cluster.notices import taken_with_notice
from orchestrator.cluster.provider import NodeProvider
from orchestrator.control.launcher import Launcher
from orchestrator.control.scheduler import JobView, NodeView, schedule
from orchestrator.control.spares import spare_shortfall
from orchestrator.control.states import HOLDING, FailureReason, JobState
from orchestrator.ledger.book import ENDINGS, build_attempt, holds_for
from orchestrator.ledger.intervals import attempt_intervals
from orchestrator.state.store import EventRecord, StaleState, StateStore
from orchestrator.control.directives import CHECKPOINT_STOP, STOP

log = logging.getLogger(__name__)
S = JobState
ACTIVE = [s for s in JobState if not s.is_terminal]
START_GRACE_S = 30.0  # a runner just started may not be visible yet
CANCEL_GRACE_S = 60.0  # after this, a cancelled job's runner is killed rather than asked


def job_view(job: dict, include_spares: bool = False) -> JobView:
    pools = job["spec"]["resources"]["pools"]
    names = [p["name"] for p in pools if p.get("kind", "on-demand") != "spare"]
    if include_spares:
        names += [p["name"] for p in pools if p.get("kind") == "spare"]
    return JobView(id=job["id"], team=job["team"], priority=job["priority"], submitted_at=job["submitted_at"],
                   nodes=job["nodes"], devices_per_node=job["devices_per_node"], pools=tuple(names),
                   assigned=tuple(job["assignment"] or ()))


class ControllerCore:
    def __init__(self, store: StateStore, provider: NodeProvider, launcher: Launcher, clock: Clock | None = None,
                 ledger_by_pool: bool = False):
        self.store, self.provider, self.launcher = store, provider, launcher
        self.clock = clock or SystemClock()
        self.ledger_by_pool = ledger_by_pool  # one ledger row per pool rather than per node

    def reconcile(self) -> None:
        nodes = self.provider.nodes()
        jobs, stale = self.store.list_jobs(ACTIVE), False
        for job in jobs:
            try:
                self._reconcile_job(job)
            except StaleState:
                stale = True  # moved by someone else meanwhile: read them all again before scheduling
        # each move updated its job's row in place, so the list is current unless something was stale
        active = self.store.list_jobs(ACTIVE) if stale else [j for j in jobs if not JobState(j["state"]).is_terminal]
        self._schedule(active, nodes)
        self._keep_spares(active, nodes)

    def _keep_spares(self, jobs: list[dict], nodes: list[NodeView]) -> None:
        """Ask the provider for the hot spares the jobs are short of (providers that can provision)."""
        provision = getattr(self.provider, "provision", None)
        if provision is None or not jobs:
            return
        coming = self.provider.coming() if hasattr(self.provider, "coming") else {}
        for pool, (kind, count) in spare_shortfall(jobs, nodes, coming).items():
            devices = max(j["devices_per_node"] for j in jobs)
            names = provision(pool, kind, count, devices)
            self.store.add_event("node.provisioned", f"{pool}: {count} hot spare(s) requested ({', '.join(names)})",
                                 data={"pool": pool, "nodes": names})

    # ------------------------------------------------------------------ one job

    def _move(self, job: dict, to: JobState, reason: str, kind: str, **updates) -> None:
        """Transition the job; when the move releases its devices, the attempt's ledger intervals
        are written in the same transaction."""
        extra = None
        if job.get("assignment") and (to.is_terminal or to in (S.PREEMPTED, S.RECOVERING)):
            intervals = self._attempt_intervals(job, ENDINGS[to.value])
            extra = lambda conn, now: self.store.insert_intervals(conn, job["team"], intervals)  # noqa: E731
        self.store.transition(job["id"], JobState(job["state"]), to, reason, updates=updates,
                              events=[EventRecord(kind, f"{job['id']}: {reason}", {"state": to.value})], extra=extra)
        job.update(state=to.value, **updates)

    def _attempt_intervals(self, job: dict, ending: str) -> list:
        attempt = build_attempt(job, self.store.last_transition_at(job["id"], S.PLACING),
                                self.store.metrics_of_attempt(job["id"], job["attempt"]), self.clock.now(), ending)
        return attempt_intervals(attempt, by_pool=self.ledger_by_pool)

    def _reconcile_job(self, job: dict) -> None:
        state = JobState(job["state"])
        if state in (S.QUEUED, S.PREEMPTED) and job["cancel_requested"]:
            return self._move(job, S.CANCELLED, "cancelled by user", "job.cancelled")
        if state == S.PREEMPTED:
            return self._move(job, S.QUEUED, "requeued after preemption", "job.requeued",
                              preempt_requested=False, assignment=None)
        if state not in HOLDING:
            return None
        if state == S.RECOVERING and not job["assignment"]:
            if job["cancel_requested"]:
                self._move(job, S.CANCELLED, "cancelled by user", "job.cancelled")
            return None  # waiting for the scheduler to place it again
        outcome = job["outcome"] if job["outcome"] and job["outcome"].get("attempt") == job["attempt"] else None
        if outcome is not None:
            self.launcher.release(job)
            return self._finish_attempt(job, outcome)
        status = self.launcher.status(job)
        if status is None:
            return self._runner_missing(job)
        if state == S.PLACING and status["phase"] == "running":
            self._move(job, S.RUNNING, f"training on {', '.join(job['assignment'])}", "job.running",
                       started_at=job["started_at"] or self.clock.now())
            state = S.RUNNING
        if job["cancel_requested"]:
            if self.clock.now() - (job["cancel_requested_at"] or 0) > CANCEL_GRACE_S:
                self.launcher.release(job)
                return self._move(job, S.CANCELLED, "cancelled by user (workers killed after the grace period)",
                                  "job.cancelled")
            return self.launcher.request(job, STOP)
        if job["preempt_requested"] and state == S.RUNNING:
            self.launcher.request(job, CHECKPOINT_STOP)
            self._move(job, S.CHECKPOINTING, "checkpointing before preemption", "job.checkpointing")
        return None

    def _finish_attempt(self, job: dict, outcome: dict) -> None:
        status = outcome["status"]
        if status == "succeeded":
            return self._move(job, S.SUCCEEDED, f"finished at step {outcome.get('step')}", "job.succeeded")
        if job["cancel_requested"]:
            return self._move(job, S.CANCELLED, "cancelled by user", "job.cancelled")
        if status == "stopped" and job["preempt_requested"]:
            going = taken_with_notice(self.store, job)
            if going is not None:  # checkpointed on a node's notice: restart like after a loss (spares allowed)
                return self._recover(job, f"checkpointed at step {outcome.get('step')} on notice: {going} is "
                                          "being taken away")
            if JobState(job["state"]) != S.CHECKPOINTING:
                self._move(job, S.CHECKPOINTING, "checkpointing before preemption", "job.checkpointing")
            return self._move(job, S.PREEMPTED, f"preempted at step {outcome.get('step')}", "job.preempted",
                              assignment=None)
        error = (outcome.get("error") or status).strip().splitlines()[-1][:500]
        if status == "failed" and not outcome.get("infrastructure"):
            return self._move(job, S.FAILED, f"training failed: {error}", "job.failed",
                              failure_reason=FailureReason.TRAINING_ERROR.value, message=error)
        return self._recover(job, f"attempt {job['attempt']} lost its workers: {error}")

    def _runner_missing(self, job: dict) -> None:
        if JobState(job["state"]) == S.PLACING and self.clock.now() - job["updated_at"] < START_GRACE_S:
            return None
        return self._recover(job, f"the runner of attempt {job['attempt']} is gone")

    def _recover(self, job: dict, reason: str) -> None:
        """Restart from the last committed checkpoint (a new attempt starts afresh: any preemption
        request was about the attempt that is gone)."""
        self.launcher.release(job)
        limit = job["spec"].get("fault_tolerance", {}).get("max_restarts", 3)
        if job["restarts"] >= limit:
            return self._move(job, S.FAILED, f"{reason}; {job['restarts']} restarts used of {limit}", "job.failed",
                              failure_reason=FailureReason.MAX_RESTARTS.value, message=reason)
        return self._move(job, S.RECOVERING, reason, "job.recovering", restarts=job["restarts"] + 1,
                          assignment=None, preempt_requested=False)

    # ------------------------------------------------------------------ scheduling

    def _schedule(self, jobs: list[dict], nodes: list[NodeView]) -> None:
        waiting = [j for j in jobs if j["state"] == S.QUEUED.value
                   or (j["state"] == S.RECOVERING.value and not j["assignment"])]
        if not waiting:
            return
        waiting = self._admit(waiting)
        if not waiting:
            return
        holding = [j for j in jobs if JobState(j["state"]) in HOLDING and j["assignment"]]
        by_id = {j["id"]: j for j in waiting}
        queue = [job_view(j, include_spares=j["state"] == S.RECOVERING.value) for j in waiting]
        decisions = schedule(queue, [job_view(j) for j in holding], nodes, self.store.team_quotas())
        for place in decisions.place:
            job = by_id[place.job_id]
            attempt = job["attempt"] + 1
            holds = holds_for({**job, "assignment": list(place.nodes)}, {n.name: n for n in nodes},
                              job["spec"]["resources"]["pools"], job["spec"]["cost"]["price_per_gpu_hour"])
            self._move(job, S.PLACING, f"placed on {', '.join(place.nodes)} (attempt {attempt})", "job.placed",
                       assignment=list(place.nodes), attempt=attempt, message=None, holds=holds)
            self.launcher.start(job, attempt)
        for wait in decisions.wait:
            job = by_id[wait.job_id]
            if job["message"] != wait.reason:
                self.store.update_job(job["id"], message=wait.reason)
                self.store.add_event("job.waiting", f"{job['id']}: {wait.reason}", job["id"])
        for preempt in decisions.preempt:
            for victim in preempt.victims:
                self.store.update_job(victim, preempt_requested=True)
                self.store.add_event("job.preempting", f"{victim}: preempted for {preempt.job_id}", victim,
                                     {"for": preempt.job_id})


    def _admit(self, waiting: list[dict]) -> list[dict]:
        """Budgets are checked at admission: past a team's budget nothing new is placed; a job past
        its own budget fails."""
        teams = self.store.teams()
        budgeted = [j for j in waiting if (j["spec"]["cost"].get("budget_gpu_hours") or j["spec"]["cost"].get("budget_usd")
                                           or teams.get(j["team"], {}).get("budget_gpu_hours")
                                           or teams.get(j["team"], {}).get("budget_usd"))]
        if not budgeted:
            return waiting
        from orchestrator.ledger.budget import check
        from orchestrator.ledger.report import cost_report

        report = cost_report(self.store, now=self.clock.now())
        self._warn_budgets(teams, report)
        per_job = {r["job"]: r for r in report["per_job"]}
        admitted = []
        for job in waiting:
            team = teams.get(job["team"], {})
            spent = report["by_team"].get(job["team"], {"gpu_hours": 0.0, "cost_usd": 0.0})
            team_check = check(spent["gpu_hours"], spent["cost_usd"], team.get("budget_gpu_hours"),
                               team.get("budget_usd"), f"team {job['team']}")
            mine = per_job.get(job["id"])
            job_check = check(mine["gpu_hours"]["total"], mine["cost_usd"], job["spec"]["cost"].get("budget_gpu_hours"),
                              job["spec"]["cost"].get("budget_usd"), "job") if mine else None
            if job_check is not None and job_check.over:
                self._move(job, S.FAILED, job_check.reason, "job.failed",
                           failure_reason=FailureReason.BUDGET_EXCEEDED.value, message=job_check.reason)
            elif team_check.over:
                if job["message"] != team_check.reason:
                    self.store.update_job(job["id"], message=team_check.reason)
                    self.store.add_event("budget.exceeded", f"{job['id']}: waits: {team_check.reason}", job["id"])
            else:
                admitted.append(job)
        return admitted


    def _warn_budgets(self, teams: dict, report: dict) -> None:
        """Record once per team and threshold (80%, 100%) that its spend crossed it."""
        from orchestrator.ledger.budget import WARN_AT, check

        warned = {(e["data"] or {}).get("team"): (e["data"] or {}).get("threshold", 0)
                  for e in self.store.events(limit=100_000) if e["kind"] == "budget.warning"}
        for name, team in teams.items():
            spent = report["by_team"].get(name, {"gpu_hours": 0.0, "cost_usd": 0.0})
            result = check(spent["gpu_hours"], spent["cost_usd"], team.get("budget_gpu_hours"),
                           team.get("budget_usd"), f"team {name}")
            for threshold in WARN_AT:
                if result.fraction >= threshold > warned.get(name, 0):
                    self.store.add_event("budget.warning", f"{result.reason} ({threshold:.0%} reached)",
                                         data={"team": name, "threshold": threshold})
                    warned[name] = threshold


class ControllerLoop:
    """Runs ``ControllerCore.reconcile`` every ``interval`` seconds in a background thread."""

    def __init__(self, core: ControllerCore, interval: float = 1.0):
        self.core, self.interval = core, interval
        self.passes, self.errors, self.last_error = 0, 0, ""
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="orch-controller", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.core.reconcile()
                self.passes += 1
            except Exception as exc:  # keep reconciling: one bad pass must not stop the control plane
                self.errors += 1
                self.last_error = repr(exc)
                log.exception("reconcile pass failed")
                try:
                    self.core.store.add_event("controller.error", f"reconcile pass failed: {exc!r}")
                except Exception:
                    log.exception("could not record the error")
            self._stop.wait(self.interval)

    def stats(self) -> dict:
        return {"passes": self.passes, "errors": self.errors, "last_error": self.last_error, "time": time.time()}
