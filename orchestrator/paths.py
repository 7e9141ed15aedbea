"""Where orch keeps its files (``ORCH_HOME``, default ``~/.orch``, and what lies under it) and the
names it gives what it starts.

A leaf: the state store, the checkpoint store, the trainer and the CLI all find their files here,
without importing one another.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_URL_ENV = "ORCH_STATE_URL"


def orch_home() -> Path:
    return Path(os.environ.get("ORCH_HOME", Path.home() / ".orch")).expanduser()


def default_state_url() -> str:
    """``ORCH_STATE_URL`` (PostgreSQL in a deployment), else SQLite under ``ORCH_HOME``."""
    return os.environ.get(STATE_URL_ENV) or f"sqlite:///{orch_home() / 'state.db'}"


def job_dir(home: str | Path, job_id: str) -> Path:
    """A job's own folder: its log (``job.log``) and its Ray Train run."""
    return Path(home) / "jobs" / job_id


def runner_name(job_id: str, attempt: int) -> str:
    """The detached Ray actor that runs attempt ``attempt`` of a job (namespace ``orch``)."""
    return f"orch-job-{job_id}-a{attempt}"


def data_cache(home: Path | None = None) -> Path:
    """Where s3:// data shards are fetched to before training reads them."""
    return (home or orch_home()) / "data-cache"
