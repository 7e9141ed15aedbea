"""Job operations shared by the CLI and the dashboard."""

from __future__ import annotations

from orchestrator.errors import OrchError
from orchestrator.lifecycle import JobState
from orchestrator.state.store import StateStore


def cancel_job(store: StateStore, job_id: str, actor: str) -> dict:
    """Ask for a job's cancellation (the controller stops its runner); the job as it is now."""
    job = store.get_job(job_id)
    if JobState(job["state"]).is_terminal:
        raise OrchError(f"job {job['id']} already {job['state']}")
    store.request_cancel(job["id"], actor)
    return store.get_job(job["id"])
