"""How long the pure planner takes on the full V3 job (2,048 ranks, 16 stages, 4 phases)."""

from __future__ import annotations

from bench.harness import Section, median_ms, time_repeated
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec

COMMAND = "make bench  (bench/bench_planner.py)"


def run() -> Section:
    spec = load_spec("jobs/v3_pretrain.yaml")
    plan_times = time_repeated(lambda: make_plan(spec), 10)
    json_times = time_repeated(lambda: make_plan(spec).to_json(include_ranks=True), 5)
    load_times = time_repeated(lambda: load_spec("jobs/v3_pretrain.yaml"), 10)
    return Section(
        "Planner: the full DeepSeek-V3 plan",
        COMMAND,
        [
            "| step | median |",
            "|---|---|",
            f"| load + validate jobs/v3_pretrain.yaml | {median_ms(load_times):.1f} ms |",
            f"| make_plan (16 stages, 242,940 steps counted, memory per stage) | {median_ms(plan_times):.1f} ms |",
            f"| make_plan + JSON with all 2,048 rank placements | {median_ms(json_times):.1f} ms |",
        ],
    )
