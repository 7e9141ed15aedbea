"""Where a job's checkpoints live: ``<checkpoint.uri>/<job id>/`` on its object store."""

from __future__ import annotations

from pathlib import Path

from orchestrator.checkpoint.objects import open_object_store
from orchestrator.checkpoint.store import CheckpointStore


def job_checkpoint_uri(uri: str, job_id: str) -> str:
    return f"{uri.rstrip('/')}/{job_id}"


def open_job_checkpoints(checkpoint_spec, job_id: str, home: Path | None = None) -> CheckpointStore:
    """``checkpoint_spec`` is the spec's checkpoint section (a model or its mapping)."""
    data = checkpoint_spec if isinstance(checkpoint_spec, dict) else checkpoint_spec.model_dump()
    objects = open_object_store(job_checkpoint_uri(data["uri"], job_id), home, data.get("s3_endpoint_url"))
    return CheckpointStore(objects, job_id)
