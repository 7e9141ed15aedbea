"""The launcher seam: how the controller starts, steers and releases a job attempt.

``RayLauncher`` runs each attempt in a detached ``JobRunner`` actor on the head node; the
simulator's launcher models steps instead. The controller knows only this protocol.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from orchestrator.lifecycle import Directive
from orchestrator.paths import runner_name
from orchestrator.state.records import JobRecord, RunnerStatus
from orchestrator.state.store import StateStore
from orchestrator.train.warm_control import runner_runtime_env
from orchestrator.train.warm_pool import describe, fill


class Launcher(Protocol):
    def prepare(self) -> None:
        """This controller now leads: make the cluster ready to start attempts (returns at once)."""

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
        for a restart that will not come (its checkpoint copies in peer memory). Best effort."""


class RayLauncher:
    def __init__(self, state_url: str, home: str):
        self.state_url, self.home = state_url, home
        self._pool_store: StateStore | None = None  # the warm pool thread's own, made at its first event
        self.fills = 0  # warm pool requests done (asked for something or not)
        self._filling: threading.Thread | None = None

    def _actor(self, job: JobRecord):
        import ray

        try:
            return ray.get_actor(runner_name(job.id, job.attempt), namespace="orch")
        except ValueError:
            return None

    def prepare(self) -> None:
        """The cluster's warm pool (``train/warm_pool.py``), asked off the reconcile loop: a raylet that
        does not answer must not hold up a pass."""
        if self._filling is not None and self._filling.is_alive():
            return  # the last request still waits on a raylet: two at once could both ask one node
        self._filling = threading.Thread(target=self._fill_warm_pool, name="warm-pool", daemon=True)
        self._filling.start()

    def _fill_warm_pool(self) -> None:
        try:
            asked = fill()
            if asked:
                self._pool_store = self._pool_store or StateStore(self.state_url)
                self._pool_store.add_event("cluster.warm_pool", f"warm pool asked for: {describe(asked)}", data=asked)
        except Exception as exc:  # best effort: without a pool the first attempts start their own processes
            logging.getLogger(__name__).warning("warm pool not asked for: %s", exc)
        finally:
            self.fills += 1

    def start(self, job: JobRecord, attempt: int) -> None:
        from orchestrator.control.runner import JobRunner  # a Ray actor class: it imports Ray

        # with warm restart, the control hook (train/warm_control.py): a warm process where the warm pool,
        # the attempt or the job before asked for one; without, the runner and its Train actors import only
        # what each needs
        warm = {"runtime_env": runner_runtime_env()} if job.spec.fault_tolerance.warm_restart else {}
        runner = JobRunner.options(
            name=runner_name(job.id, attempt),
            namespace="orch",
            lifetime="detached",
            resources={"orch_head": 0.001},
            max_restarts=0,
            get_if_exists=True,
            **warm,
        ).remote(job.id, attempt, self.state_url, self.home, time.time())
        runner.run.remote()

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
        from orchestrator.train.peer_memory import forget_everywhere  # Ray: the shard holder actor class

        forget_everywhere(job.id)
