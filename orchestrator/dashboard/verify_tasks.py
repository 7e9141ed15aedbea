"""Checkpoint verification as background tasks: started by an operator, rate-limited, with progress.

A verification reads every shard of a checkpoint (terabytes for a full-scale run), so it never runs
inside a request: ``start`` returns a task at once and a thread streams the shards through the
checkpoint store's ``verify_shard_streaming`` in fixed-size pieces (memory stays constant whatever the
checkpoint's size). At most ``slots`` verifications run at once; asking again for a checkpoint being
verified returns the task already running; a request beyond the slots is refused with 429.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass, field

KEEP_FINISHED = 50  # finished tasks kept for their progress pages


class Busy(Exception):
    """Every verification slot is taken."""


@dataclass
class VerifyTask:
    id: str
    job: str
    step: int
    actor: str
    shards: int
    bytes_total: int
    state: str = "running"  # running | done | failed
    shards_done: int = 0
    bytes_done: int = 0
    problems: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def view(self) -> dict:
        data = asdict(self)
        data["verified"] = self.state == "done" and not self.problems
        return data


class VerifyBoard:
    def __init__(self, slots: int = 1):
        self.slots = slots
        self._tasks: dict[str, VerifyTask] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def get(self, task_id: str) -> VerifyTask | None:
        with self._lock:
            return self._tasks.get(task_id)

    def start(self, checkpoints, manifest, job: str, actor: str, chunk_bytes: int = 8 << 20) -> tuple[VerifyTask, bool]:
        """(the task, whether it is new); raises ``Busy`` when every slot is taken."""
        with self._lock:
            for task in self._tasks.values():
                if task.state == "running" and (task.job, task.step) == (job, manifest.step):
                    return task, False
            if sum(t.state == "running" for t in self._tasks.values()) >= self.slots:
                raise Busy()
            task = VerifyTask(
                f"verify-{next(self._ids)}", job, manifest.step, actor, len(manifest.files), manifest.total_bytes
            )
            self._tasks[task.id] = task
            self._forget_old()
        threading.Thread(
            target=self._run, args=(task, checkpoints, manifest, chunk_bytes), daemon=True, name=task.id
        ).start()
        return task, True

    def _run(self, task: VerifyTask, checkpoints, manifest, chunk_bytes: int) -> None:
        def progressed(n: int) -> None:
            task.bytes_done += n

        try:
            for rank in range(len(manifest.files)):
                problem = checkpoints.verify_shard_streaming(manifest, rank, chunk_bytes, progressed)
                if problem:
                    task.problems.append(problem)
                task.shards_done += 1
            task.state = "done"
        except Exception as exc:  # a failed task reports why; the server goes on
            task.problems.append(f"verification failed: {type(exc).__name__}: {str(exc)[:200]}")
            task.state = "failed"
        finally:
            task.finished_at = time.time()

    def _forget_old(self) -> None:
        finished = [t for t in self._tasks.values() if t.state != "running"]
        for task in sorted(finished, key=lambda t: t.started_at)[: -KEEP_FINISHED or None]:
            del self._tasks[task.id]
