"""The job runner: one detached Ray actor per job attempt that drives its Ray Train run.

It lives apart from the controller, so a controller crash or restart does not touch training.
It records what the workload did (step metrics, the job log, the final outcome) in the state
store; it never changes a job's state: the controller reads the outcome and moves the job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback

import ray

from orchestrator.control.controller_handle import wake_controller
from orchestrator.control.failures import RESTART, classify
from orchestrator.control.step_log import StepLog
from orchestrator.ledger.exposure import gang_exposure
from orchestrator.lifecycle import Directive
from orchestrator.paths import job_dir, runner_name  # noqa: F401 (runner_name: its older import path)
from orchestrator.plan.planner import make_plan
from orchestrator.private import open_private, private_dir
from orchestrator.state.records import RunnerOutcome, RunnerStatus
from orchestrator.state.store import StateStore
from orchestrator.train import warm_control


@ray.remote(num_cpus=0, max_concurrency=8)
class JobRunner:
    def __init__(self, job_id: str, attempt: int, state_url: str, home: str, requested_at: float | None = None):
        """``requested_at``: when the launcher asked for this actor (a process older than that is a warm
        one, prestarted by the attempt before: ``train/warm_control.py``)."""
        self.job_id, self.attempt = job_id, attempt
        self.warm = warm_control.started_warm(requested_at)
        # only a launcher's runner has a successor in this Ray job to prestart for (a RayJob's driver has none)
        self.launched = requested_at is not None
        self.run_name = f"{job_id}-a{attempt}"  # the attempt's Ray Train run
        self.fit_at: float | None = None  # when the run started (a Train controller older than that was warm)
        self.warm_restart = False  # the job's fault_tolerance.warm_restart, once run() has read the spec
        self.store = StateStore(state_url)
        self.home = home
        self.directive, self.deadline = Directive.CONTINUE, None
        self.phase = "starting"
        self.resumed_from: int | None = None  # the step this attempt resumed from (its first step says)
        self.durable_logged: int | None = None  # the newest commit to object storage logged
        self.step = 0
        self.steps = StepLog(self.store, job_id, attempt)  # metric rows, written before each commit is recorded
        self.lock = threading.Lock()
        self.dir = job_dir(home, job_id)
        private_dir(self.dir)
        self.log_file = open_private(self.dir / "job.log", "a", buffering=1)  # 0600: logs are the owner's

    def log(self, line: str) -> None:
        self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def startup(self, phase: str, detail: str = "") -> None:
        """One start-up phase began (workers, data, engine build, restore, first step): a line in the job
        log and a ``job.startup`` event, with the seconds since submission, so `orch submit` can show
        where a cold start spends its minutes."""
        job = self.store.get_job(self.job_id)
        elapsed = time.time() - job["submitted_at"]
        text = f"start-up: {phase}" + (f" ({detail})" if detail else "") + f" at +{elapsed:.1f} s"
        self.log(f"attempt {self.attempt} {text}")
        self.store.add_event(
            "job.startup",
            f"{self.job_id}: attempt {self.attempt} {text}",
            self.job_id,
            {"phase": phase, "detail": detail, "attempt": self.attempt, "elapsed_s": elapsed},
        )

    # ------------------------------------------------------------------ called by the controller

    def status(self) -> RunnerStatus:
        return RunnerStatus(phase=self.phase, attempt=self.attempt, step=self.step, directive=self.directive)

    def request(self, directive: str, deadline: float | None = None) -> None:
        """``deadline`` (epoch seconds) bounds an emergency checkpoint, e.g. an interruption notice."""
        directive = Directive(directive)  # a ValueError for anything else
        if deadline is None and directive == self.directive:
            deadline = self.deadline  # a later request without a deadline (the controller's) keeps a notice's
        if self.directive != directive or deadline != self.deadline:
            self.log(f"directive: {directive}" + (f" (deadline in {deadline - time.time():.0f} s)" if deadline else ""))
        self.directive, self.deadline = directive, deadline

    def _note_redo(self, metrics: dict) -> None:
        """An attempt that resumed below the checkpoint the job had recorded (the newest was committed
        only in peer memory and its copies were gone, or it was found damaged) trains those steps again;
        the attempt before was booked as keeping them, so this one's are lost work (``redo_until``)."""
        recorded = self.store.get_job(self.job_id)["last_checkpoint_step"]
        resumed = metrics.get("resumed_from") or 0
        if recorded is not None and resumed < recorded:
            metrics["redo_until"] = recorded
            self.log(
                f"attempt {self.attempt} resumed from step {resumed or 'none'}, below the checkpoint recorded at "
                f"step {recorded}: steps {resumed + 1}-{recorded} are trained again and counted as lost"
            )

    def checkpoint_result(self, result: dict) -> None:
        """Rank 0 reports how the emergency checkpoint went: committed before the deadline or not."""
        verdict = "committed in time" if result["committed"] else "NOT committed before the deadline"
        self.log(f"emergency checkpoint at step {result['step']}: {verdict}")
        if result["committed"]:
            # the newest committed step: what `status` shows and what the ledger keeps (nothing lost)
            self.steps.commit(result["step"], announce=False)
        self.store.add_event(
            "checkpoint.emergency", f"{self.job_id}: checkpoint at step {result['step']} {verdict}", self.job_id, result
        )

    def run(self) -> dict:
        """Run the attempt to its end and record the outcome (blocking; an actor task)."""
        from orchestrator.train.ray_worker import run_with_ray_train  # torch and DeepSpeed: only in the runner

        with self.lock:
            if self.phase != "starting" or getattr(self, "_started", False):
                return {"attempt": self.attempt, "status": "already running"}
            self._started = True
        job = self.store.job(self.job_id)
        outcome: dict = {"attempt": self.attempt}
        try:
            self.warm_restart = job.spec.fault_tolerance.warm_restart
            if self.launched and self.warm_restart:  # (a cold job's runner has another runtime environment)
                warm_control.runner_started()
            plan = make_plan(job.spec)
            assignment = list(job.assignment)
            selectors = [{"orch-node": assignment[p.node]} for p in plan.mesh.placements()]
            self.log(
                f"attempt {self.attempt}: {plan.mesh.world_size} workers on {', '.join(assignment)} "
                f"(PP{plan.mesh.pipeline} x DP{plan.mesh.data} EP{plan.mesh.expert})"
            )
            self.startup(
                "workers starting",
                f"a gang of {plan.mesh.world_size} Ray Train workers; the runner in a "
                + ("warm process" if self.warm else "new process"),
            )
            seen = gang_exposure(self.store, self.job_id, plan.mesh.world_size)
            self.log(
                f"attempt {self.attempt}: the checkpoint interval policy starts from {seen.interruptions} "
                f"infrastructure interruption(s) over {seen.held_s:.0f} s of holding the gang"
            )
            handle = ray.get_runtime_context().current_actor
            self.fit_at = time.time()
            result = run_with_ray_train(
                job.spec_data,
                plan.mesh.world_size,
                str(self.dir / "ray"),
                self.run_name,
                label_selectors=selectors,
                runner=handle,
                assignment=assignment,
                extra_resources={"orch_device": 1},
                cpus_per_worker=0.5,
                job_id=self.job_id,
                home=self.home,
                interruptions=seen.as_tuple(),
            )
            if result.error is not None:
                outcome.update(status="failed", error=_describe(result.error), **_failure(result.error))
            elif self.directive in (Directive.STOP, Directive.CHECKPOINT_STOP):
                outcome.update(status="stopped", directive=self.directive)
            else:
                outcome.update(status="succeeded")
        except Exception as exc:  # the outcome must be recorded whatever went wrong
            outcome.update(status="failed", error=_describe(exc), **_failure(exc))
        outcome["step"] = self.step
        self.steps.flush(force=True)
        self.log(
            f"attempt {self.attempt} ended: {outcome['status']}"
            + (f": {outcome['error'].splitlines()[-1]}" if outcome.get("error") else "")
        )
        if outcome.get("error"):
            self.log(outcome["error"])
        self.store.record_outcome(self.job_id, RunnerOutcome.from_row(outcome))
        self.phase = "done"
        wake_controller()
        return outcome

    # ------------------------------------------------------------------ called by rank 0 each step

    def on_step(self, metrics: dict) -> str:
        if self.phase != "running":  # the attempt's first step: rank 0 calls one step at a time
            self._note_redo(metrics)
        with self.lock:
            first = self.phase != "running"
            self.steps.add(metrics)
            self.step = metrics["step"]
            self.phase = "running"
            committed = metrics.get("checkpoint_step")  # restorable: durable, or newer in peer memory
            durable = metrics.get("checkpoint_durable_step", committed)
        if first:
            detail = f"step {metrics['step']} took {metrics.get('step_time_s', 0.0):.1f} s"
            warm = warm_control.controller_started_warm(self.run_name, self.fit_at) if self.fit_at else None
            if warm is not None:
                detail += f"; Ray Train's controller started in a {'warm' if warm else 'new'} process"
            self.startup("training", detail)
            # after the first step, as for the ranks' warm workers (ray_worker.py)
            if self.warm_restart and self.launched:
                threading.Thread(target=_warm_control_quietly, name="warm-control", daemon=True).start()
        # the checkpoint this attempt restored was committed (and logged) by an earlier attempt
        resumed = metrics.get("resumed_from", self.resumed_from)
        self.resumed_from = resumed
        if committed is not None:
            restored = committed == resumed
            if self.steps.commit(committed, announce=not restored) and not restored and committed != durable:
                self.log(f"checkpoint at step {committed} committed in peer memory (its upload is under way)")
        if durable is not None and durable != self.durable_logged:
            if resumed is None or durable > resumed:  # (at or below it: logged by an earlier attempt)
                self.log(f"checkpoint committed at step {durable}")
            self.durable_logged = durable
        self.log(
            json.dumps(
                {
                    k: metrics[k]
                    for k in ("step", "loss", "tokens_per_s", "step_time_s", "expert_imbalance", "global_batch")
                    if k in metrics
                }
            )
        )
        self.steps.flush()
        return [self.directive, self.deadline or 0.0]


def _warm_control_quietly() -> None:
    """The next attempt's warm control processes (``train/warm_control.py``); never fails the attempt."""
    try:
        warm_control.prestart_for_next_attempt()
    except Exception as exc:  # (a GCS or raylet away for a moment: the next restart starts them cold)
        logging.getLogger(__name__).warning("warm control processes not asked for: %s", exc)


def _describe(error: BaseException) -> str:
    text = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else str(error)
    return text[-8000:]


def _failure(error: BaseException) -> dict:
    """The outcome's failure class (``control/failures.py``): its reason, and whether it restarts."""
    reason = classify(_describe(error))
    return {"failure_reason": reason.value, "infrastructure": reason in RESTART}
