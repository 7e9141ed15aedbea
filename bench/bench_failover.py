"""Control-plane failures on the embedded cluster with GCS fault tolerance (`orch up --ha`): the
time a training job makes no progress after a GCS kill, after the loss of the whole head, and
after the leader of two elected controllers is killed (drills in bench/failover.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.failover import Drills
from bench.harness import Section

COMMAND = "python -m bench.run_all failover  (bench/bench_failover.py, drills in bench/failover.py)"


def run() -> Section:
    drills = Drills(Path(tempfile.mkdtemp(prefix="orch-bench-failover-")))
    drills.up()
    try:
        gcs, head = drills.gcs_kill(), drills.head_loss()
        try:
            ctl = drills.controller_failover()
        except Exception as exc:  # the section still records the two head drills, and says what failed
            ctl = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        drills.down()
    for name, r in (("GCS kill", gcs), ("head loss", head)):
        assert r.job["state"] == "succeeded", (name, r.job["message"])
    assert "error" in ctl or (ctl["job"]["state"] == "succeeded" and ctl["job"]["attempt"] == 1), ctl
    body = [
        "The local miniature on 4 CPU workers (head + 3 worker raylets on this machine, a real redis-server "
        "as the GCS's external storage), checkpoint every 5 steps; the failure strikes after step 8 and the "
        "killed part is started again 3 s later (as a supervisor would; the controller drill kills the leading "
        "replica once the replicas took over from the removed actor, and restarts nothing). Time without "
        "progress: from the last "
        "step before the failure to the first step after it. Seconds:",
        "",
        "| failure | what the job did | time without progress | down (killed -> restarted) | steps trained twice |",
        "|---|---|---|---|---|",
    ]
    for name, r, did in (
        ("GCS killed (SIGKILL), restarted", gcs, "continued, same attempt, no restart"),
        (
            "whole head killed (GCS, head raylet, controller, runner), restarted",
            head,
            "resumed from its checkpoint (attempt 2); controller actor restored by Ray",
        ),
    ):
        body.append(f"| {name} | {did} | {r.stall_s:.1f} | {r.restored_at - r.failed_at:.1f} | {r.steps_redone} |")
    if "error" in ctl:
        body.append(f"| controller failover | the drill failed: {ctl['error']} | - | - | - |")
    else:
        body.append(
            f"| controller failover: the leader of 2 `orch controller --in-process` SIGKILLed (lease "
            f"{ctl['ttl_s']:.0f} s) | continued, same attempt; the standby recorded its end | {ctl['stall_s']:.1f} | "
            f"not restarted; the standby led {ctl['takeover_s']:.1f} s after the kill | {ctl['steps_redone']} |"
        )
    body += [
        "",
        "A step of this job takes about 1 s here. The GCS kill costs no restart: the job pauses for about "
        "as long as the GCS is down and carries on. The head loss costs a restart from the checkpoint "
        "because the job's runner (the owner of its training workers) lives on the head; most of its time "
        "is `ray start --head` and the new attempt's start. The controller failover costs the job nothing "
        "(its runner does not depend on the controller while training); the standby's takeover is "
        "bounded by the lease's expiry (`--lease-ttl`).",
    ]
    return Section("Control-plane failover: GCS kill, head loss, controller leader", COMMAND, body)
