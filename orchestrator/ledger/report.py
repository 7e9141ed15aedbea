"""The figures `orch cost`, the dashboard's /api/cost and the Prometheus exporter share."""

from __future__ import annotations

from orchestrator.control.states import HOLDING, JobState
from orchestrator.ledger.book import build_attempt, job_figures, total_figures
from orchestrator.ledger.intervals import attempt_intervals
from orchestrator.plan.schedule import phase_tokens
from orchestrator.spec import validate_mapping
from orchestrator.state.store import StateStore


def job_intervals(store: StateStore, job: dict, now: float) -> list:
    """Closed attempts from the ledger, plus the attempt still holding devices priced up to now."""
    intervals = store.intervals(job["id"])
    if JobState(job["state"]) in HOLDING and job["assignment"]:
        attempt = build_attempt(job, store.last_transition_at(job["id"], JobState.PLACING),
                                store.metrics_of_attempt(job["id"], job["attempt"]), now, "running")
        intervals += attempt_intervals(attempt)
    return intervals


def planned_tokens(job: dict) -> float:
    spec = validate_mapping(job["spec"], job["id"])
    return sum(phase_tokens(p) for p in spec.phases)


def job_cost(store: StateStore, job: dict, now: float | None = None) -> dict:
    now = store.clock.now() if now is None else now
    return job_figures(job, job_intervals(store, job, now), planned_tokens(job), now)


def cost_report(store: StateStore, job_ref: str | None = None, now: float | None = None) -> dict:
    now = store.clock.now() if now is None else now
    jobs = [store.get_job(job_ref)] if job_ref else store.list_jobs()
    per_job = [job_cost(store, job, now) for job in jobs]
    if job_ref:
        return per_job[0]
    return {**total_figures(per_job), "per_job": per_job}


def team_spend(store: StateStore, now: float | None = None) -> dict[str, dict]:
    return cost_report(store, now=now)["by_team"]
