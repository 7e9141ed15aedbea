"""The live progress display of a job and its closing summary."""

from __future__ import annotations

import sys
import time

from orchestrator.control.client import ControlPlane
from orchestrator.control.states import JobState

POLL_SECONDS = 1.0


def eta_seconds(plane: ControlPlane, job: dict) -> float | None:
    recent = plane.store.metrics(job["id"], after_step=max(-1, job["step"] - 10))
    if len(recent) < 2 or job["step"] <= 0:
        return None
    per_step = sum(m["step_time_s"] for m in recent) / len(recent)
    return per_step * (job["total_steps"] - job["step"])


def ledger_figures(plane: ControlPlane, job: dict) -> dict:
    """The ledger's figures for the job (the same `orch cost` prints)."""
    from orchestrator.ledger.report import job_cost

    return job_cost(plane.store, job)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(plane: ControlPlane, job: dict) -> str:
    state = job["state"]
    parts = [f"{job['id']}  {state:<13}", f"step {job['step']}/{job['total_steps']}"]
    if job["loss"] is not None:
        parts.append(f"loss {job['loss']:.3f}")
    if job["tokens_per_s"]:
        parts.append(f"{job['tokens_per_s']:,.0f} tok/s")
    if state == JobState.RUNNING.value:
        parts.append(f"ETA {_clock(eta_seconds(plane, job))}")
    parts.append(f"ckpt {job['last_checkpoint_step'] if job['last_checkpoint_step'] is not None else '-'}")
    parts.append(f"device-h {ledger_figures(plane, job)['gpu_hours']['total']:.4f}")
    if state in (JobState.QUEUED.value, JobState.RECOVERING.value) and job["message"]:
        parts.append(f"({job['message']})")
    return "  ".join(parts)


def follow_job(plane: ControlPlane, job_id: str) -> dict:
    """Print progress until the job ends; return its final row. Ctrl-C propagates (detach)."""
    tty = sys.stdout.isatty()
    last_state, last_print = "", 0.0
    while True:
        job = plane.store.get_job(job_id)
        line = progress_line(plane, job)
        if tty:
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()
        elif job["state"] != last_state or time.time() - last_print >= 10:  # logs: on change, else every 10 s
            print(line, flush=True)
            last_print = time.time()
        last_state = job["state"]
        if JobState(job["state"]).is_terminal:
            if tty:
                sys.stdout.write("\n")
            return job
        time.sleep(POLL_SECONDS)


def job_summary_lines(plane: ControlPlane, job: dict, spec_file: str) -> list[str]:
    from orchestrator.plan.planner import make_plan
    from orchestrator.plan.render import money
    from orchestrator.spec import load_spec

    lines = [f"{job['id']} {job['state']}" + (f": {job['message']}" if job["message"] else "")]
    if job["started_at"]:
        wall = (job["ended_at"] or time.time()) - job["started_at"]
        lines.append(f"  trained {job['step']} steps, {job['tokens']:,.0f} tokens in {wall:.0f} s; final loss "
                     f"{job['loss']:.3f}" if job["loss"] is not None else f"  ran {wall:.0f} s")
        figures = ledger_figures(plane, job)
        hours = figures["gpu_hours"]
        lines.append(f"  device-hours: {hours['total']:.4f} on {job['world_size']} "
                     f"{job['spec']['resources']['accelerator']['type']} devices, ${figures['cost_usd']:.2f}, goodput "
                     f"{figures['goodput']:.0%} (productive {hours['productive']:.4f}, checkpoint "
                     f"{hours['checkpoint']:.4f}, queued {hours['queued']:.4f}, recovery {hours['recovery']:.4f}, "
                     f"lost {hours['lost']:.4f}); details: orch cost {job['id']}")
    try:
        full = make_plan(load_spec(spec_file))
        lines.append(f"  full-scale projection ({full.spec.name}, {full.mesh.world_size} x "
                     f"{full.spec.resources.accelerator.type}): {full.total_gpu_hours:,.0f} GPU-hours, "
                     f"{money(full.total_cost_usd)}, {full.total_days:.1f} days "
                     f"(DeepSeek-V3: 2,788,000 GPU-hours, $5.576M)")
    except Exception as exc:  # the summary must not turn a finished job into an error
        lines.append(f"  (no full-scale projection: {exc})")
    lines.append(f"  next: orch status {job['id']}   orch events {job['id']}   orch logs {job['id']}")
    return lines
