"""A launcher for controller-core tests: it records which attempts were started and reports them
running, so the controller's own decisions (restarts, budgets, backoff) are what the tests see."""

from __future__ import annotations

from orchestrator.state.records import RunnerStatus


class RecordingLauncher:
    def __init__(self):
        self.started: list[tuple[str, int]] = []
        self.forgotten: list[str] = []

    def prepare(self):
        pass

    def start(self, job, attempt):
        self.started.append((job.id, attempt))

    def status(self, job):
        return RunnerStatus("running", job.attempt)

    def request(self, job, directive, deadline=None):
        pass

    def release(self, job):
        pass

    def forget(self, job):
        self.forgotten.append(job.id)
