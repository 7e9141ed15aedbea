"""`orch forecast JOB [--runs N] [--json]`: when the job will finish and what it will have cost,
P10/P50/P90 from the rest of the run simulated N times from the job's own evidence (see
docs/forecast.md), against its budget and DeepSeek-V3's published 2.788M GPU-hours / $5.576M."""

from __future__ import annotations

import argparse

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.cli.plan_view import money
from orchestrator.control.client import ControlPlane
from orchestrator.errors import FieldProblem, ProblemListError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="P10/P50/P90 of a running job's finish, GPU-hours and dollars vs its budget")
    p.add_argument("job")
    p.add_argument("--runs", type=int, default=100, help="Monte-Carlo runs of the rest of the job (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the forecast's simulated runs")
    p.add_argument(
        "--prior-days",
        type=float,
        default=1.0,
        help="weight of the spec's interruption rates, in days of the gang's exposure (default 1)",
    )
    add_json_argument(p)
    p.set_defaults(func=cmd_forecast)


class ForecastOptionError(ProblemListError):
    title = "invalid option"


def option_error(option: str, message: str, fix: str) -> ForecastOptionError:
    return ForecastOptionError([FieldProblem(option, message, fix=fix)], "orch forecast")


def cmd_forecast(args: argparse.Namespace) -> int:
    from orchestrator.forecast.alerts import record_crossing
    from orchestrator.forecast.report import job_forecast

    if not 1 <= args.runs <= 100_000:
        raise option_error("--runs", f"{args.runs} is out of range", "give 1 to 100000 runs, e.g. --runs 100")
    if args.prior_days < 0:
        raise option_error("--prior-days", f"{args.prior_days} is negative", "give 0 (the evidence only) or more days")
    store = ControlPlane().store
    fc = job_forecast(store, args.job, runs=args.runs, seed=args.seed, prior_days=args.prior_days)
    fc["alert"] = record_crossing(store, fc, store.get_job(fc["job"])["spec"]["cost"].get("forecast_alert", "p50"))
    if args.json:
        print_json(fc)
        return 0
    print(render(fc))
    return 0


def _gpu_hours(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.4g}"


def _band(b: dict, fmt) -> str:
    return " / ".join(fmt(b[k]) if b[k] is not None else "-" for k in ("p10", "p50", "p90"))


def render(fc: dict) -> str:
    p, s, ref, b = fc["progress"], fc["spent"], fc["reference"], fc["budget"]
    lines = [
        f"{fc['job']} ({fc['state']}): step {p['step']:,} of {p['total_steps']:,} ({p['fraction']:.1%}), "
        f"{fc['runs']} runs, as of {fc['as_of_iso']}",
        f"  spent:      {_gpu_hours(s['gpu_hours'])} GPU-hours, {money(s['cost_usd'])} GPUs + "
        f"{money(s['storage_cost_usd'])} storage",
        "  forecast    P10 / P50 / P90",
        f"  finish:     {_band(fc['finish_at_iso'], lambda v: v.replace('+00:00', 'Z'))}",
        f"  days left:  {_band(fc['days_left'], lambda v: f'{v:,.2f}')}",
        f"  GPU-hours:  {_band(fc['gpu_hours'], _gpu_hours)}",
        f"  dollars:    {_band(fc['cost_usd'], money)} (storage {_band(fc['storage_cost_usd'], money)})",
    ]
    if fc["failure_probability"]:
        lines.append(f"  {fc['failure_probability']:.0%} of runs exhaust max_restarts before the end")
    if b.get("usd"):
        lines.append(f"  budget {money(b['usd'])}: over in {b['p_over_usd']:.0%} of runs")
    if b.get("gpu_hours"):
        lines.append(f"  budget {b['gpu_hours']:,.0f} GPU-hours: over in {b['p_over_gpu_hours']:.0%} of runs")
    if ref.get("gpu_hours"):
        lines.append(
            f"  DeepSeek-V3 reference: {ref['gpu_hours']:,} GPU-hours, {money(ref['cost_usd'])}; "
            f"P50 is {ref['gpu_hours_p50_ratio']:.3g}x the GPU-hours, "
            f"{ref['cost_p50_ratio']:.3g}x the dollars"
        )
    m = fc["model"]
    mtbf = f"{m['gang_mtbf_s'] / 3600:,.2f} h" if m["gang_mtbf_s"] else "none expected"
    lines.append(
        f"  model: gang MTBF {mtbf} (Gamma-Poisson, spec prior + observed), save every "
        f"{m['interval_s']:,.0f} s, recovery {m['recovery_s']:,.0f} s held + {m['replacement_wait_s']:,.0f} s "
        f"waiting ({m['sources']['recovery']}); step times: {m['sources']['step_times']}"
    )
    lines.append(f"  next: orch cost {fc['job']}; orch forecast {fc['job']} --json")
    return "\n".join(lines)
