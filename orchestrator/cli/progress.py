"""The live progress display of a job, the lines of what happens to it, and its closing summary.

While a job starts, the live line says which start-up phase it is in and for how long; each phase,
state change and checkpoint is also printed as its own line as it happens (with the seconds since
the command started), so a cold start of minutes is never silent.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from orchestrator.cli.ledger_view import ledger_lines
from orchestrator.control.client import ControlPlane
from orchestrator.humanize import duration
from orchestrator.ledger.report import job_cost
from orchestrator.lifecycle import JobState

POLL_SECONDS = 1.0
STARTING = (JobState.PLACING.value, JobState.RECOVERING.value)


def eta_seconds(plane: ControlPlane, job: dict) -> float | None:
    recent = plane.store.metrics(job["id"], after_step=max(-1, job["step"] - 10))
    if len(recent) < 2 or job["step"] <= 0:
        return None
    per_step = sum(m["step_time_s"] for m in recent) / len(recent)
    return per_step * (job["total_steps"] - job["step"])


def ledger_figures(plane: ControlPlane, job: dict) -> dict:
    """The ledger's figures for the job (the same `orch cost` prints)."""
    return job_cost(plane.store, plane.store.job(job["id"]))


def latest_startup(events: list[dict], attempt: int) -> dict | None:
    """The newest ``job.startup`` event of ``attempt`` among ``events`` (oldest first)."""
    for e in reversed(events):
        if e["kind"] == "job.startup" and (e["data"] or {}).get("attempt") == attempt:
            return e
    return None


def progress_line(plane: ControlPlane, job: dict, startup: dict | None = None, now: float | None = None) -> str:
    """One line: state, then the start-up phase while starting, else step, loss, rate, ETA; checkpoint, ledger."""
    now = time.time() if now is None else now
    state = job["state"]
    parts = [f"{job['id']}  {state:<13}"]
    if state in STARTING and startup is not None:
        phase = startup["data"]["phase"]
        parts.append(f"start-up {duration(now - job['submitted_at'])}: {phase} ({duration(now - startup['at'])})")
    elif state == JobState.PLACING.value:
        parts.append(f"start-up {duration(now - job['submitted_at'])}: placing the gang")
    else:
        parts.append(f"step {job['step']}/{job['total_steps']}")
        if job["loss"] is not None:
            parts.append(f"loss {job['loss']:.3f}")
        if job["tokens_per_s"]:
            parts.append(f"{job['tokens_per_s']:,.0f} tok/s")
        if state == JobState.RUNNING.value:
            parts.append(f"ETA {duration(eta_seconds(plane, job))}")
    parts.append(f"ckpt {job['last_checkpoint_step'] if job['last_checkpoint_step'] is not None else '-'}")
    parts.append(f"device-h {ledger_figures(plane, job)['gpu_hours']['total']:.4f}")
    if state in (JobState.QUEUED.value, JobState.RECOVERING.value) and job["message"]:
        parts.append(f"({job['message']})")
    return "  ".join(parts)


def event_line(event: dict, since: float) -> str:
    """``[+  41s] start-up: engine build`` — an event of the followed job, its job id prefix dropped."""
    message = event["message"]
    prefix = f"{event['job_id']}: " if event.get("job_id") else ""
    if prefix and message.startswith(prefix):
        message = message[len(prefix) :]
    return f"[+{event['at'] - since:5.0f}s] {message}"


class Follower:
    """Prints a job's new events as lines and its live line (redrawn in place on a terminal)."""

    def __init__(self, plane: ControlPlane, job_id: str, since: float):
        self.plane, self.job_id, self.since = plane, job_id, since
        self.after_id, self.events = 0, []
        self.tty = sys.stdout.isatty()
        self.last_state, self.last_print = "", 0.0

    def poll(self) -> dict:
        job = self.plane.store.get_job(self.job_id)
        new = self.plane.store.events(self.job_id, after_id=self.after_id)
        if new:
            self.after_id = new[-1]["id"]
            self.events += [e for e in new if e["kind"] == "job.startup"]
        for e in new:
            self._write_line(event_line(e, self.since))
        line = progress_line(self.plane, job, latest_startup(self.events, job["attempt"]))
        if self.tty:
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()
        elif job["state"] != self.last_state or time.time() - self.last_print >= 10:  # logs: on change, or 10 s
            print(line, flush=True)
            self.last_print = time.time()
        self.last_state = job["state"]
        return job

    def _write_line(self, text: str) -> None:
        sys.stdout.write(("\r\033[K" if self.tty else "") + text + "\n")
        sys.stdout.flush()


def follow_job(plane: ControlPlane, job_id: str, since: float | None = None) -> dict:
    """Print progress until the job ends; return its final row. Ctrl-C propagates (detach)."""
    follower = Follower(plane, job_id, plane.store.get_job(job_id)["submitted_at"] if since is None else since)
    while True:
        job = follower.poll()
        if JobState(job["state"]).is_terminal:
            if follower.tty:
                sys.stdout.write("\n")
            return job
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send this process's file descriptor 2 to ``path`` meanwhile: Ray's core worker writes its own
    warnings there from C++, which would break the live line; they stay readable in the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def job_summary_lines(plane: ControlPlane, job: dict, spec_arguments: str) -> list[str]:
    """What the run took, as the ledger books it (start-up apart), and the plan beside the measured rate."""
    lines = [f"{job['id']} {job['state']}" + (f": {job['message']}" if job["message"] else "")]
    if job["started_at"]:
        wall = (job["ended_at"] or time.time()) - job["started_at"]
        lines.append(
            f"  trained {job['step']} steps, {job['tokens']:,.0f} tokens in {duration(wall)}; final loss "
            f"{job['loss']:.3f}"
            if job["loss"] is not None
            else f"  ran {duration(wall)}"
        )
    figures = ledger_figures(plane, job)
    lines += ledger_lines(figures, job)
    lines.append(f"  full-scale plan (static, not this run's measured rate): orch plan {spec_arguments.split()[0]}")
    lines.append(
        f"  next: orch status {job['id']}   orch events {job['id']}   orch logs {job['id']}   orch cost {job['id']}"
    )
    return lines
