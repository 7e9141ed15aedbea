"""The job runner: one detached Ray actor per job attempt that drives its Ray Train run.

It lives apart from the controller, so a controller crash or restart does not touch training.
It records what the workload did (step metrics, the job log, the final outcome) in the state
store; it never changes a job's state: the controller reads the outcome and moves the job.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path

import ray

from orchestrator.state.store import StateStore
from orchestrator.control.directives import CHECKPOINT_STOP, CONTINUE, DIRECTIVES, STOP

FLUSH_SECONDS = 1.0


def runner_name(job_id: str, attempt: int) -> str:
    return f"orch-job-{job_id}-a{attempt}"


def job_dir(home: str | Path, job_id: str) -> Path:
    return Path(home) / "jobs" / job_id


@ray.remote(num_cpus=0, max_concurrency=8)
class JobRunner:
    def __init__(self, job_id: str, attempt: int, state_url: str, home: str):
        self.job_id, self.attempt = job_id, attempt
        self.store = StateStore(state_url)
        self.home = home
        self.directive, self.deadline = CONTINUE, None
        self.phase = "starting"
        self.step = 0
        self.pending: list[dict] = []
        self.lock = threading.Lock()
        self.last_flush = time.time()
        self.dir = job_dir(home, job_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.dir / "job.log", "a", buffering=1)

    def log(self, line: str) -> None:
        self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    # ------------------------------------------------------------------ called by the controller

    def status(self) -> dict:
        return {"phase": self.phase, "step": self.step, "directive": self.directive, "attempt": self.attempt}

    def request(self, directive: str, deadline: float | None = None) -> None:
        """``deadline`` (epoch seconds) bounds an emergency checkpoint, e.g. an interruption notice."""
        if directive not in DIRECTIVES:
            raise ValueError(directive)
        if deadline is None and directive == self.directive:
            deadline = self.deadline  # a later request without a deadline (the controller's) keeps a notice's
        if self.directive != directive or deadline != self.deadline:
            self.log(f"directive: {directive}" + (f" (deadline in {deadline - time.time():.0f} s)" if deadline else ""))
        self.directive, self.deadline = directive, deadline

    def checkpoint_result(self, result: dict) -> None:
        """Rank 0 reports how the emergency checkpoint went: committed before the deadline or not."""
        verdict = "committed in time" if result["committed"] else "NOT committed before the deadline"
        self.log(f"emergency checkpoint at step {result['step']}: {verdict}")
        self.store.add_event("checkpoint.emergency", f"{self.job_id}: checkpoint at step {result['step']} {verdict}",
                             self.job_id, result)

    def run(self) -> dict:
        """Run the attempt to its end and record the outcome (blocking; an actor task)."""
        from orchestrator.plan.planner import make_plan
        from orchestrator.spec import validate_mapping
        from orchestrator.train.ray_worker import run_with_ray_train

        with self.lock:
            if self.phase != "starting" or getattr(self, "_started", False):
                return {"attempt": self.attempt, "status": "already running"}
            self._started = True
        job = self.store.get_job(self.job_id)
        outcome: dict = {"attempt": self.attempt}
        try:
            spec = validate_mapping(job["spec"], job["id"])
            plan = make_plan(spec)
            assignment = list(job["assignment"])
            selectors = [{"orch-node": assignment[p.node]} for p in plan.mesh.placements()]
            self.log(f"attempt {self.attempt}: {plan.mesh.world_size} workers on {', '.join(assignment)} "
                     f"(PP{plan.mesh.pipeline} x DP{plan.mesh.data} EP{plan.mesh.expert})")
            handle = ray.get_runtime_context().current_actor
            result = run_with_ray_train(
                job["spec"], plan.mesh.world_size, str(self.dir / "ray"), f"{self.job_id}-a{self.attempt}",
                label_selectors=selectors, runner=handle, assignment=assignment,
                extra_resources={"orch_device": 1}, cpus_per_worker=0.5, job_id=self.job_id, home=self.home)
            if result.error is not None:
                outcome.update(status="failed", error=_describe(result.error),
                               infrastructure=_is_infrastructure(result.error))
            elif self.directive in (STOP, CHECKPOINT_STOP):
                outcome.update(status="stopped", directive=self.directive)
            else:
                outcome.update(status="succeeded")
        except Exception as exc:  # the outcome must be recorded whatever went wrong
            outcome.update(status="failed", error=_describe(exc), infrastructure=_is_infrastructure(exc))
        outcome["step"] = self.step
        self._flush(force=True)
        self.log(f"attempt {self.attempt} ended: {outcome['status']}"
                 + (f": {outcome['error'].splitlines()[-1]}" if outcome.get("error") else ""))
        if outcome.get("error"):
            self.log(outcome["error"])
        self.store.update_job(self.job_id, outcome=outcome)
        self.phase = "done"
        return outcome

    # ------------------------------------------------------------------ called by rank 0 each step

    def on_step(self, metrics: dict) -> str:
        with self.lock:
            self.pending.append(metrics)
            self.step = metrics["step"]
            self.phase = "running"
            committed = metrics.get("checkpoint_step")
        if committed is not None and committed != getattr(self, "_committed", None):
            self._committed = committed
            self.store.update_job(self.job_id, last_checkpoint_step=committed)
            self.store.add_event("checkpoint.committed", f"{self.job_id}: checkpoint at step {committed}",
                                 self.job_id, {"step": committed})
        self.log(json.dumps({k: metrics[k] for k in ("step", "loss", "tokens_per_s", "step_time_s",
                                                      "expert_imbalance", "global_batch") if k in metrics}))
        self._flush()
        return [self.directive, self.deadline or 0.0]

    def _flush(self, force: bool = False) -> None:
        with self.lock:
            if not self.pending or (not force and time.time() - self.last_flush < FLUSH_SECONDS):
                return
            rows, self.pending = self.pending, []
            self.last_flush = time.time()
        self.store.add_metrics(self.job_id, self.attempt, rows)


def _describe(error: BaseException) -> str:
    text = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else str(error)
    return text[-8000:]


INFRASTRUCTURE_MARKERS = ("ActorDiedError", "ActorUnavailableError", "NodeDiedError", "node died",
                          "WorkerGroupStartupTimeoutError", "ray.exceptions.RayActorError", "OwnerDiedError",
                          "Connection closed by peer", "Connection reset by peer")


def _is_infrastructure(error: BaseException) -> bool:
    """Whether a failure came from lost nodes or workers (retry from a checkpoint) rather than from
    the training code itself (fail: retrying a deterministic bug only burns device-hours)."""
    text = _describe(error)
    return any(marker in text for marker in INFRASTRUCTURE_MARKERS)
