"""A cold `orch submit jobs/v3_pretrain.yaml --profile local` (what `make run` runs), timed as a user
sees it: when the first line appears, when each start-up phase began (the job's ``job.startup``
events, seconds since submission), the first step, the end of training, and the whole command; then
`orch down`. One run in a fresh ORCH_HOME (no cluster running, no warm Ray workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Section
from orchestrator.state.store import StateStore

SPEC = "jobs/v3_pretrain.yaml"
COMMAND = f"python -m bench.run_all startup  (bench/bench_startup.py: orch submit {SPEC} --profile local, cold)"


def _orch(home: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "ORCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def submit_cold(home: Path) -> dict:
    """Run the submit to its end; when its first line came and when it returned (seconds from start)."""
    started = time.time()
    proc = _orch(home, "submit", SPEC, "--profile", "local")
    first_line, lines = None, []
    for line in proc.stdout:
        first_line = first_line if first_line is not None else time.time() - started
        lines.append(line.rstrip())
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError("orch submit failed:\n" + "\n".join(lines[-30:]))
    return {"started": started, "first_line_s": first_line, "total_s": time.time() - started}


def run() -> Section:
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        home = Path(tmp)
        try:
            timing = submit_cold(home)
            store = StateStore(f"sqlite:///{home / 'state.db'}")
            job = store.list_jobs()[0]
            events = store.events(job["id"], limit=100_000)
            transitions = store.transitions(job["id"])
        finally:
            down = time.time()
            _orch(home, "down").wait(timeout=120)
            down_s = time.time() - down
    since = timing["started"]
    rows = [
        ("first line printed", timing["first_line_s"]),
        ("job submitted (cluster up, spec checked, job enqueued)", job["submitted_at"] - since),
    ]
    rows += [
        (f"placed on {', '.join(job['assignment'] or [])}", t["at"] - since)
        for t in transitions
        if t["to_state"] == "placing"
    ]
    rows += [(f"start-up phase: {e['data']['phase']}", e["at"] - since) for e in events if e["kind"] == "job.startup"]
    rows += [
        (f"succeeded ({job['step']} steps)", job["ended_at"] - since),
        ("`orch submit` returned (summary printed)", timing["total_s"]),
    ]
    body = [
        "One cold run: a fresh ORCH_HOME, the embedded cluster started by `orch submit`; seconds from the "
        "command's start.",
        "",
        "| moment | seconds |",
        "|---|---|",
    ]
    body += [f"| {what} | {seconds:.1f} |" for what, seconds in rows]
    body += [
        "",
        f"Training (placement to success): {job['ended_at'] - transitions[1]['at']:.1f} s; "
        f"`orch down` afterwards: {down_s:.1f} s.",
    ]
    return Section("Cold start: `orch submit` of the local miniature", COMMAND, body)
