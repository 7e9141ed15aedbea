"""Several seeds, and sweeps of one scenario value: statistics, the optimum, and a chart.

Every point of a sweep runs the same seeds (common random numbers: the same interruption times
wherever the cluster is the same), so differences between points are the swept value's, not the
dice's. The optimum is the point with the lowest mean cluster bill among those whose runs all
finished. For a checkpoint-interval sweep the Young/Daly interval for the scenario's save cost
and gang MTBF is reported beside it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

from orchestrator.checkpoint.policy import gang_mtbf_seconds, request_cost_seconds, young_daly_interval
from orchestrator.plan.costs import scenario_costs
from orchestrator.plan.planner import make_plan
from orchestrator.plan.scenario import Scenario, apply_scenario
from orchestrator.plan.timeline import build_timeline
from orchestrator.simulate.engine import simulate
from orchestrator.spec.schema import JobSpec

FIGURES = {
    "days": lambda r: r["days"],
    "gpu_hours": lambda r: r["gpu_hours"]["total"],
    "cost_usd": lambda r: r["cluster_bill"]["cost_usd"],
    "ledger_cost_usd": lambda r: r["cost_usd"],
    "goodput": lambda r: r["goodput"],
    "restarts": lambda r: r["restarts"],
    "interruptions": lambda r: r["interruptions"],
}


def describe(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def run_seeds(spec: JobSpec, scenario: Scenario, runs: int, timeline=None) -> dict:
    """``runs`` simulations with seeds ``scenario.seed`` .. ``+ runs - 1`` and their statistics."""
    if timeline is None:
        timeline = build_timeline(make_plan(apply_scenario(spec, scenario)))
    results = [simulate(spec, replace(scenario, seed=scenario.seed + i), timeline) for i in range(runs)]
    return {
        "runs": results,
        "succeeded": sum(r["state"] == "succeeded" for r in results),
        "stats": {name: describe([get(r) for r in results]) for name, get in FIGURES.items()},
    }


def young_daly_minutes(spec: JobSpec, scenario: Scenario) -> float | None:
    applied = apply_scenario(spec, scenario)
    plan = make_plan(applied)
    costs = scenario_costs(plan, scenario)
    tau = young_daly_interval(costs.stall_s + request_cost_seconds(applied), gang_mtbf_seconds(applied))
    return None if math.isinf(tau) else max(tau, costs.save_s) / 60.0


def sweep(spec: JobSpec, scenario: Scenario, key: str, values: list[str], runs: int) -> dict:
    timeline = build_timeline(make_plan(apply_scenario(spec, scenario)))
    points = []
    for value in values:
        point_scenario = scenario.with_value(key, value)
        batch = run_seeds(spec, point_scenario, runs, timeline)
        points.append({"value": value, "succeeded": batch["succeeded"], "runs": runs, **batch["stats"]})
    finished = [p for p in points if p["succeeded"] == runs]
    best = min(finished, key=lambda p: p["cost_usd"]["mean"]) if finished else None
    result = {
        "key": key,
        "runs": runs,
        "seed": scenario.seed,
        "points": points,
        "best": best["value"] if best else None,
    }
    if key == "checkpoint_interval":
        result["young_daly_minutes"] = young_daly_minutes(spec, scenario)
    return result


def draw_chart(result: dict, path: str, title: str) -> None:
    """Cost (top) and days (bottom) against the swept value, the spread over seeds as error bars,
    the optimum starred; two panels, since on an all-spot cluster the two curves coincide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [p for p in result["points"] if _number(p["value"]) is not None]
    xs = [_number(p["value"]) for p in numeric]
    fig, (cost_axis, days_axis) = plt.subplots(2, 1, sharex=True, figsize=(8, 6), dpi=110)
    panels = (
        (cost_axis, "cost_usd", 1e6, "cluster bill, $M", "tab:blue"),
        (days_axis, "days", 1.0, "days", "tab:orange"),
    )
    for axis, figure, scale, label, color in panels:
        axis.errorbar(
            xs,
            [p[figure]["mean"] / scale for p in numeric],
            yerr=[p[figure]["std"] / scale for p in numeric],
            color=color,
            marker="o",
            capsize=3,
            label=label,
        )
        for p in result["points"]:
            if _number(p["value"]) is None:  # e.g. checkpoint_interval=auto: a reference line
                best_mark = " (optimum)" if p["value"] == result["best"] else ""
                axis.axhline(
                    p[figure]["mean"] / scale,
                    color="tab:green",
                    linestyle=":",
                    label=f"{result['key']}={p['value']}{best_mark}",
                )
        if result["best"] is not None and _number(result["best"]) is not None:
            best = next(p for p in numeric if p["value"] == result["best"])
            axis.plot(
                [_number(best["value"])],
                [best[figure]["mean"] / scale],
                marker="*",
                markersize=16,
                color="red",
                linestyle="none",
                label=f"optimum: {result['best']}",
            )
        if result.get("young_daly_minutes"):
            axis.axvline(
                result["young_daly_minutes"],
                color="gray",
                linestyle="--",
                label=f"Young/Daly {result['young_daly_minutes']:.1f} min",
            )
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    unit = " (minutes)" if result["key"] == "checkpoint_interval" else ""
    days_axis.set_xlabel(result["key"].replace("_", " ") + unit)
    cost_axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
