"""The launcher seam: how the controller starts, steers and releases a job attempt.

``RayLauncher`` runs each attempt in a detached ``JobRunner`` actor on the head node; the
simulator's launcher models steps instead. The controller knows only this protocol.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.lifecycle import Directive
from orchestrator.paths import runner_name
from orchestrator.state.records import JobRecord, RunnerStatus


class Launcher(Protocol):
    def start(self, job: JobRecord, attempt: int) -> None:
        """Start attempt ``attempt`` of ``job`` on ``job.assignment`` (returns at once)."""

    def status(self, job: JobRecord) -> RunnerStatus | None:
        """The attempt's runner status, or None if no runner is alive for it."""

    def request(self, job: JobRecord, directive: Directive, deadline: float | None = None) -> None:
        """Ask the attempt to stop (``stop``) or to checkpoint and stop (``checkpoint_stop``), the
        checkpoint bounded by ``deadline`` (epoch seconds) when given."""

    def release(self, job: JobRecord) -> None:
        """Forget the attempt (its outcome is recorded); kills whatever is left of it."""

    def forget(self, job: JobRecord) -> None:
        """The job is over (succeeded, failed or cancelled): free what its attempts left on the nodes
        for a restart that will not come (its checkpoint copies in peer memory, the runner prestarted
        for its next attempt). Best effort."""


class RayLauncher:
    def __init__(self, state_url: str, home: str):
        self.state_url, self.home = state_url, home

    def _actor(self, job: JobRecord):
        import ray

        try:
            return ray.get_actor(runner_name(job.id, job.attempt), namespace="orch")
        except ValueError:
            return None

    def start(self, job: JobRecord, attempt: int) -> None:
        """Run the attempt in its runner: the one its predecessor prestarted (``runner.prestart_runner``), or a
        new one. Sent again for a runner still standing by (a controller that restarted between placing
        the job and starting it): ``run`` runs once."""
        from orchestrator.control.runner import runner_actor  # a Ray actor class: importing it imports Ray

        runner_actor(job.id, attempt, self.state_url, self.home).run.remote()

    def status(self, job: JobRecord) -> RunnerStatus | None:
        import ray

        actor = self._actor(job)
        if actor is None:
            return None
        try:
            return ray.get(actor.status.remote(), timeout=10)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return None

    def request(self, job: JobRecord, directive: Directive, deadline: float | None = None) -> None:
        actor = self._actor(job)
        if actor is not None:
            actor.request.remote(directive, deadline)

    def release(self, job: JobRecord) -> None:
        import ray

        actor = self._actor(job)
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def forget(self, job: JobRecord) -> None:
        # a job's rank 0 frees its copies when it finishes training; a job that failed, was cancelled
        # or lost its last attempt leaves them in every holder's host memory until the node goes
        import ray

        from orchestrator.train.peer_memory import forget_everywhere  # Ray: the shard holder actor class

        try:  # the runner standing by for an attempt that will not come
            ray.kill(ray.get_actor(runner_name(job.id, job.attempt + 1), namespace="orch"), no_restart=True)
        except ValueError:
            pass
        forget_everywhere(job.id)
