"""A controller process for the leader-election tests: the real ``ControllerLoop`` with a lease,
the real ``ControllerCore`` and a real state store, over four fixed nodes.

Runners are emulated the way Ray's detached runner actors behave: they outlive the controller that
started them (a file per attempt in a shared folder, like a named actor any controller can look
up), and the workload finishes as soon as it runs, recording which controller launched it.

    python -m tests.helpers.elected_controller STATE_URL RUNNERS_DIR HOLDER TTL_S
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from orchestrator.cluster.provider import NodeView
from orchestrator.control.controller import ControllerCore, ControllerLoop
from orchestrator.lifecycle import JobState, OutcomeStatus
from orchestrator.state.lease import Lease
from orchestrator.state.records import JobRecord, RunnerOutcome, RunnerStatus
from orchestrator.state.store import StateStore


class FixedNodes:
    def nodes(self) -> list[NodeView]:
        return [NodeView(f"n{i}", "local", "on-demand", 2) for i in range(4)]


class SharedRunners:
    """Runners any controller can find (as named detached actors are), that outlive their starter."""

    def __init__(self, store: StateStore, folder: Path, holder: str):
        self.store, self.folder, self.holder = store, folder, holder

    def _path(self, job: JobRecord, attempt: int | None = None) -> Path:
        return self.folder / f"{job.id}-{job.attempt if attempt is None else attempt}.json"

    def start(self, job: JobRecord, attempt: int) -> None:
        self._path(job, attempt).write_text(json.dumps({"started_by": self.holder}))

    def status(self, job: JobRecord) -> RunnerStatus | None:
        path = self._path(job)
        if not path.exists():
            return None
        if job.state == JobState.RUNNING and job.outcome is None:  # the workload: done once it runs
            started_by = json.loads(path.read_text())["started_by"]
            self.store.add_event("test.runner_done", f"{job.id}: done", job.id, {"started_by": started_by})
            self.store.record_outcome(job.id, RunnerOutcome(job.attempt, OutcomeStatus.SUCCEEDED, 10))
        return RunnerStatus("running", job.attempt)

    def prepare(self) -> None:
        return None

    def request(self, job: JobRecord, directive: str, deadline: float | None = None) -> None:
        return None

    def release(self, job: JobRecord) -> None:
        self._path(job).unlink(missing_ok=True)

    def forget(self, job: JobRecord) -> None:
        return None


def main() -> None:
    url, folder, holder, ttl = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    store = StateStore(url)
    core = ControllerCore(store, FixedNodes(), SharedRunners(store, folder, holder))
    loop = ControllerLoop(core, interval=0.2, lease=Lease(store, holder=holder, ttl_s=ttl))
    loop.start()
    print("started", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
