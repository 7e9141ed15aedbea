"""`orch forecast` on the DeepSeek-V3 job mid-run: how long 100 (and 1,000) Monte-Carlo runs of the
rest of the job take, evidence gathering from the state store included (target: 100 runs < 10 s).

The mid-run job is made by `orch simulate` (the real controller and ledger on simulated time)
stopped at day 20 of the full V3 run and flushed as a runner would, in an SQLite state store.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import Section
from orchestrator.forecast.report import job_forecast
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import Simulation
from orchestrator.spec.loader import load_spec

COMMAND = "python -m bench.run_all forecast  (bench/bench_forecast.py)"
SCENARIOS = [
    ("all spot, 0.1 interruptions/node-day, no notice", Scenario(spot_fraction=1.0, interruption_rate=0.1)),
    (
        "half spot at 0.1/node-day, 120 s notice, 4 hot spares",
        Scenario(spot_fraction=0.5, interruption_rate=0.1, notice_seconds=120, spares=4),
    ),
]


def mid_run(scenario: Scenario):
    spec = load_spec(
        "jobs/v3_pretrain.yaml", None, ["fault_tolerance.max_restarts=10000", "fault_tolerance.restart_budget=null"]
    )
    sim = Simulation(spec, Scenario(**{**scenario.__dict__, "max_days": 20.0}), start_at=1.8e9)
    sim.run()
    sim.flush_running()
    return sim.store, sim.store.list_jobs()[0]["id"]


def run() -> Section:
    body = [
        "DeepSeek-V3 job (247,797 steps, 256 nodes x 8 H800) at day 20 of its run; median of 3:",
        "",
        "| scenario | step at day 20 | restarts so far | 100 runs | 1,000 runs | P10 / P50 / P90 GPU-hours | "
        "P10 / P50 / P90 dollars |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, scenario in SCENARIOS:
        store, job = mid_run(scenario)
        timings = {}
        for runs in (100, 1000):
            took = []
            for _ in range(3):
                began = time.perf_counter()
                fc = job_forecast(store, job, runs=runs)
                took.append(time.perf_counter() - began)
            timings[runs] = statistics.median(took)
        g, c = fc["gpu_hours"], fc["cost_usd"]
        body.append(
            f"| {name} | {fc['progress']['step']:,} | {fc['model']['restarts_so_far']:,} | "
            f"{timings[100]:.2f} s | {timings[1000]:.2f} s | "
            f"{g['p10'] / 1e6:.3f}M / {g['p50'] / 1e6:.3f}M / {g['p90'] / 1e6:.3f}M | "
            f"${c['p10'] / 1e6:.3f}M / ${c['p50'] / 1e6:.3f}M / ${c['p90'] / 1e6:.3f}M |"
        )
    return Section("Forecast: the V3 job mid-run", COMMAND, body)
