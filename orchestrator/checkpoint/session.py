"""One rank's checkpointing during training: asynchronous saves, emergency saves, and resume.

A save snapshots the rank's state into host memory (the step waits only for that copy, and for the
previous save if one is still in flight), then serialises and uploads it in a background thread.
Rank 0 commits the step (manifest) once every rank's receipt is in, then applies retention and
collects garbage. Nothing is gathered to rank 0: each rank writes and reads only its own shard.
Resume picks the newest committed step whose shards every rank can read and verify; a corrupt or
missing shard is named and the previous committed step is tried.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Callable

import torch

from orchestrator.checkpoint.store import CheckpointError, CheckpointStore, Manifest
from orchestrator.checkpoint.objects import StorageError

log = logging.getLogger(__name__)

Agree = Callable[[bool], bool]  # True only if every rank passes True (an all-reduce MIN)


def to_host(obj):
    """A deep copy with every tensor cloned to CPU memory, detached from training."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, to_host(v)) for k, v in obj.items()) if not hasattr(obj, "default_factory") \
            else {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_host(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_host(v) for v in obj)
    return obj


def serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class RankCheckpointer:
    def __init__(self, store: CheckpointStore, rank: int, world_size: int, mesh: dict,
                 keep_last: int = 3, keep_every: int = 0, commit_timeout_s: float = 300.0):
        self.store, self.rank, self.world_size, self.mesh = store, rank, world_size, mesh
        self.keep_last, self.keep_every = keep_last, keep_every
        self.commit_timeout_s = commit_timeout_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.in_flight: int | None = None
        self.last_committed: int | None = None
        self.last_duration_s: float | None = None
        self.last_bytes = 0

    # ------------------------------------------------------------------ saving

    def save_async(self, step: int, state: dict, tokens: float, progress: dict) -> float:
        """Start saving ``state`` as ``step``; returns the seconds the training step was stalled."""
        started = time.perf_counter()
        self.wait()
        snapshot = to_host(state)
        self.in_flight = step
        self._thread = threading.Thread(target=self._write, args=(step, snapshot, tokens, progress, time.perf_counter()),
                                        name=f"checkpoint-{step}", daemon=True)
        self._thread.start()
        return time.perf_counter() - started

    def _write(self, step: int, snapshot: dict, tokens: float, progress: dict, started: float) -> None:
        try:
            payload = serialize(snapshot)
            self.last_bytes = len(payload)
            self.store.put_shard(step, self.rank, payload)
            if self.rank == 0:
                self.store.commit(step, self.world_size, self.mesh, tokens, progress, self.commit_timeout_s)
                self.last_committed = step
                self.store.apply_retention(self.keep_last, self.keep_every)
                self.store.collect_garbage(in_flight={step})
            self.last_duration_s = time.perf_counter() - started
        except BaseException as exc:  # reported to the training thread by wait()
            self._error = exc
        finally:
            self.in_flight = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the save in flight; False if it is still running after ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(f"rank {self.rank}: checkpoint failed: {error}") from error
        return True

    def save_sync(self, step: int, state: dict, tokens: float, progress: dict,
                  deadline: float | None = None) -> bool:
        """Save and wait until the step is committed; False if ``deadline`` (epoch seconds) passed first."""
        self.save_async(step, state, tokens, progress)
        remaining = None if deadline is None else max(0.0, deadline - time.time())
        if not self.wait(remaining):
            return False
        while step not in self.store.committed():
            if deadline is not None and time.time() > deadline:
                return False
            time.sleep(0.05)
        return True

    # ------------------------------------------------------------------ resuming

    def load_latest(self, agree: Agree) -> tuple[Manifest, dict] | None:
        """The newest committed step for this mesh that every rank can verify, and this rank's state."""
        candidates = [s for s in reversed(self.store.committed())]
        for step in candidates:
            manifest = self.store.manifest(step)
            if not _mesh_matches(manifest.mesh, self.mesh):
                log.warning("step %s was saved for mesh %s, not %s; skipped", step, manifest.mesh, self.mesh)
                continue
            state, problem = None, ""
            try:
                state = torch.load(io.BytesIO(self.store.read_shard(manifest, self.rank)), weights_only=False)
            except (CheckpointError, StorageError) as exc:
                problem = str(exc)
                log.warning("rank %s: %s; falling back to the previous checkpoint", self.rank, problem)
            if agree(state is not None):
                return manifest, state
            if problem:
                self.skipped.append(problem)
        return None

    @property
    def skipped(self) -> list[str]:
        if not hasattr(self, "_skipped"):
            self._skipped: list[str] = []
        return self._skipped


def _mesh_matches(saved: dict, current: dict) -> bool:
    return all(saved.get(k) == current.get(k) for k in ("pipeline", "data", "expert", "tensor", "world_size"))
