"""The V3 job survives its whole simulated run at Meta's failure rate scaled to 256 nodes.

Meta measured a mean time to failure of 7.9 h at 1,024 GPUs: 0.0237 failures per node-day, about one
every 4 h on 256 nodes, ~350 over 57 days. With the lifetime ``max_restarts: 100`` the job failed on
day 19 (max_restarts_exceeded); with ``restart_budget`` (infrastructure restarts per 24 h) it finishes.
The run is the real controller on simulated time (``orchestrator/simulate``): about 7 s of CPU for
~320 restarts, so it is marked slow. With the measured recovery costs (plan/recovery.py: the warm path,
detect 1.2 s, start 5.5 s, restore from a peer's memory) it reaches the issue's 98.5% (98.8%;
96.6% with the old flat 180 s restart) because a step is restorable once it is committed in peer memory,
seconds after its save starts (checkpoint/memory.py), instead of after its 96 s upload: the work lost
at a failure, still the largest loss, is then about half the ``auto`` interval. At 98.2% before that,
it was half the interval plus the upload (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.plan.planner import make_plan
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import simulate
from orchestrator.spec.loader import load_spec
from tests.conftest import V3_SPEC

META_RATE = 0.0237  # failures per node-day: 1 / (7.9 h x 128 nodes of 8 GPUs) x 24 h


@pytest.mark.slow
def test_the_v3_job_finishes_its_run_at_metas_failure_rate():
    spec = load_spec(str(V3_SPEC), None, [])
    budget = spec.fault_tolerance.restart_budget
    meta = Scenario(spot_fraction=1.0, spot_price=2.0, interruption_rate=META_RATE, notice_seconds=0, spares=4)
    r = simulate(spec, meta)
    assert r["state"] == "succeeded", (r.get("failure_reason"), r["restarts"], r["days"])
    assert r["steps"] == r["total_steps"] == make_plan(spec).total_steps
    # far more restarts than the old lifetime count allowed, none of them refused by the window
    assert r["restarts"] > 300 > 100
    assert r["restarts"] / r["days"] < budget.restarts / (budget.window_hours / 24)
    assert r["goodput"] >= 0.985  # the target
    hours = r["gpu_hours"]
    # what dominates: the work lost since the newest restorable step, more than recovery and saves together
    assert hours["lost"] > 2 * (hours["recovery"] + hours["checkpoint"])
    # side by side: restoring only from object storage, a step is restorable only after its upload
    stored = simulate(spec, replace(meta, restore_from="storage"))
    assert stored["checkpoints"]["memory_commit_s"] is None and r["checkpoints"]["memory_commit_s"] < 10
    per_failure = [x["gpu_hours"]["lost"] / x["restarts"] for x in (r, stored)]
    assert per_failure[0] < 0.75 * per_failure[1] and stored["goodput"] < 0.985
