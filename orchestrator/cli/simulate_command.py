"""`orch simulate FILE`: the run replayed on a simulated cluster with the real control plane."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from orchestrator.cli.common import add_json_argument, add_spec_arguments, print_json, spec_from_args
from orchestrator.cli.plan_view import money
from orchestrator.errors import FieldProblem, SpecError
from orchestrator.lifecycle import LedgerCategory
from orchestrator.plan.recovery import COLD, DEFAULT, PEER_GBPS, WARM
from orchestrator.plan.scenario import SWEEPABLE, Scenario, apply_scenario, option_error
from orchestrator.simulate.cluster import SimulatedCluster


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate the whole run on a simulated cluster: days, GPU-hours, cost; sweeps",
        description="Discrete-event simulation of the job on the spec's cluster, driving orch's own "
        "controller, scheduler, checkpoint policy and ledger on simulated time.",
    )
    add_spec_arguments(p)
    add_json_argument(p)
    g = p.add_argument_group("the simulated cluster")
    g.add_argument("--seed", type=int, default=0, help="random seed of the simulated interruptions")
    g.add_argument("--runs", type=int, default=1, help="seeds per point (mean and spread are reported)")
    g.add_argument("--spot-fraction", type=float, help="share of the job's nodes on spot (rewrites the pools)")
    g.add_argument("--spot-price", type=float, help="$ per GPU-hour on spot (default: 40%% of cost.price)")
    g.add_argument("--interruption-rate", type=float, help="interruptions per spot node per day")
    g.add_argument("--notice", type=int, help="spot interruption notice, seconds (AWS 120; GKE gives pods 15)")
    g.add_argument("--spares", type=int, help="hot-spare nodes")
    g.add_argument("--checkpoint-interval", help="minutes, or auto (Young/Daly)")
    g.add_argument("--provision-delay", type=float, default=600.0, help="seconds until a replacement node joins")
    g.add_argument(
        "--restart",
        type=float,
        default=COLD.rejoin_s,
        help="seconds for a gang to start cold (restore excluded; measured: see docs/simulate.md)",
    )
    g.add_argument(
        "--detect", type=float, default=DEFAULT.detect_s, help="seconds until an abrupt node loss is noticed"
    )
    g.add_argument(
        "--warm-restart",
        type=float,
        default=WARM.rejoin_s if WARM else None,
        help="seconds for a gang to start when every node has workers up (survivors, hot spares); "
        "default: measured, or none (cold only) until measured",
    )
    g.add_argument(
        "--restore-from",
        choices=("memory", "storage"),
        default="memory" if WARM else "storage",
        help="where a restarted gang reads its checkpoint: a peer's host memory or object storage",
    )
    g.add_argument("--peer-gbps", type=float, default=PEER_GBPS, help="per-device bandwidth between nodes, GB/s")
    g.add_argument("--storage-gbps", type=float, default=100.0, help="checkpoint storage bandwidth, GB/s")
    g.add_argument("--snapshot-gbps", type=float, default=10.0, help="device-to-host copy per device, GB/s")
    g.add_argument("--blocking-saves", action="store_true", help="saves stall training until they commit")
    g.add_argument("--trace", help="CSV of interruptions (columns: seconds,node; node may be a pool name)")
    g.add_argument("--max-days", type=float, help="stop after this many simulated days")
    s = p.add_argument_group("sweeps")
    s.add_argument("--sweep", help=f"KEY=V1,V2,...; KEY one of {', '.join(SWEEPABLE)}")
    s.add_argument("--chart", help="PNG of the sweep (default: sweep-KEY.png)")
    p.set_defaults(func=cmd_simulate)


def read_trace(path: str) -> tuple[tuple[float, str], ...]:
    try:
        with open(path, newline="") as handle:
            rows = [r for r in csv.reader(handle) if r and not r[0].lstrip().startswith("#")]
    except OSError as exc:
        raise option_error(
            "--trace", f"cannot read {path}: {exc.strerror}", "give a CSV file of seconds,node"
        ) from None
    events = []
    for number, row in enumerate(rows, 1):
        if number == 1 and row[0].strip().lower() in ("seconds", "time", "time_s", "at"):
            continue
        try:
            events.append((float(row[0]), row[1].strip()))
        except (ValueError, IndexError):
            raise option_error(
                "--trace",
                f"line {number} is not 'seconds,node': {','.join(row)}",
                "one interruption per line, e.g. 3600,sim-spot-0007",
            ) from None
    return tuple(sorted(events))


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    for name in ("runs",):
        if getattr(args, name) < 1:
            raise option_error(f"--{name}", "must be at least 1", "e.g. --runs 5")
    for name in ("provision_delay", "restart", "detect", "warm_restart"):
        if (getattr(args, name) or 0) < 0:
            raise option_error(f"--{name.replace('_', '-')}", "must not be negative", "give seconds, e.g. 600")
    for name in ("storage_gbps", "snapshot_gbps", "peer_gbps"):
        if getattr(args, name) <= 0:
            raise option_error(f"--{name.replace('_', '-')}", "must be positive", "give GB/s, e.g. 100")
    for name in ("interruption_rate", "spot_price", "spares", "notice", "max_days"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise option_error(f"--{name.replace('_', '-')}", "must not be negative", "give a value >= 0")
    return Scenario(
        seed=args.seed,
        spot_fraction=args.spot_fraction,
        spot_price=args.spot_price,
        interruption_rate=args.interruption_rate,
        notice_seconds=args.notice,
        spares=args.spares,
        checkpoint_interval=args.checkpoint_interval,
        provision_delay_s=args.provision_delay,
        restart_s=args.restart,
        detect_s=args.detect,
        warm_restart_s=args.warm_restart,
        restore_from=args.restore_from,
        peer_gbps=args.peer_gbps,
        storage_gbps=args.storage_gbps,
        snapshot_gbps=args.snapshot_gbps,
        blocking_saves=args.blocking_saves,
        trace=read_trace(args.trace) if args.trace else None,
        max_days=args.max_days,
    )


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not items:
        raise option_error(
            "--sweep", f"expected KEY=V1,V2,... (got '{text}')", "e.g. --sweep checkpoint_interval=10,20,40"
        )
    if key not in SWEEPABLE:
        raise option_error("--sweep", f"'{key}' cannot be swept", f"sweep one of: {', '.join(SWEEPABLE)}")
    return key, items


def cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator.simulate.sweep import draw_chart, run_seeds, sweep

    spec = spec_from_args(args)
    scenario = scenario_from_args(args)
    if scenario.trace is not None:
        _check_trace(spec, scenario)
    if args.sweep:
        key, values = parse_sweep(args.sweep)
        for value in values:  # every value is checked before anything runs
            apply_scenario(spec, scenario.with_value(key, value))
        result = sweep(spec, scenario, key, values, args.runs)
        chart = args.chart or f"sweep-{key}.png"
        draw_chart(result, chart, f"{spec.name}: {key} ({args.runs} seed{'s' if args.runs > 1 else ''} per point)")
        result["chart"] = str(Path(chart).resolve())
        if args.json:
            print_json(result)
        else:
            print(render_sweep(result))
        return 0
    batch = run_seeds(spec, scenario, args.runs)
    if args.json:
        print_json(batch["runs"][0] if args.runs == 1 else batch)
    else:
        print(render_result(batch["runs"][0]) if args.runs == 1 else render_runs(batch))
    return 0


def _check_trace(spec, scenario: Scenario) -> None:
    cluster = SimulatedCluster(apply_scenario(spec, scenario))
    unknown = sorted({n for _, n in scenario.trace if n not in cluster.nodes_by_name and n not in cluster.pools})
    if unknown:
        raise SpecError(
            [
                FieldProblem(
                    "--trace",
                    f"unknown nodes or pools: {', '.join(unknown[:5])}",
                    fix=f"name a pool ({', '.join(cluster.pools)}) or a node such as "
                    f"{next(iter(cluster.nodes_by_name))}",
                )
            ],
            "simulate",
        )


def render_result(r: dict) -> str:
    hours = r["gpu_hours"]
    lines = [
        f"{r['job']}: {r['state']}" + (f" ({r['message']})" if r["message"] and r["state"] != "succeeded" else ""),
        f"  steps           {r['steps']:,} of {r['total_steps']:,}",
        f"  wall clock      {r['days']:.2f} days (plan: {r['plan']['days']:.2f})",
        f"  interruptions   {r['interruptions']:,} ({r['interruptions_hitting_job']:,} hit the job: "
        f"{r['saved_on_notice']:,} saved on notice, "
        f"{r['interruptions_hitting_job'] - r['saved_on_notice']:,} lost work); restarts {r['restarts']:,}",
        f"  checkpoints     {r['checkpoints']['saves']:,} saves of "
        f"{r['checkpoints']['checkpoint_bytes'] / 1e12:.2f} TB "
        f"(stall {r['checkpoints']['stall_s']:.2f} s, commit {r['checkpoints']['save_s']:.0f} s, "
        f"restore {r['checkpoints']['restore_s']:.1f} s from {r['checkpoints']['restore_from']})",
        _recovery_line(r["checkpoints"]),
        "  GPU-hours       " + "  ".join(f"{c} {hours[c.value]:,.0f}" for c in LedgerCategory),
        f"                  total {hours['total']:,.0f} = {r['vs_plan']:.3f} x plan "
        f"({r['plan']['gpu_hours']:,.0f}); "
        f"goodput {r['goodput']:.1%} (wall clock {r['wall_goodput']:.1%})",
        f"  cost (ledger)   {money(r['cost_usd'])}  "
        + "  ".join(f"{pool} {money(v['cost_usd'])}" for pool, v in r["by_pool"].items()),
        f"  storage         {money(r['storage']['cost_usd'])}: "
        f"{r['storage']['checkpoint_puts']['requests']:,} PUTs "
        f"{money(r['storage']['checkpoint_puts']['cost_usd'])}, "
        f"{r['storage']['checkpoint_restores']['requests']:,} "
        f"restore GETs {money(r['storage']['checkpoint_restores']['cost_usd'])}, "
        f"{r['storage']['checkpoint_storage']['gib_months']:,.0f} GiB-months "
        f"{money(r['storage']['checkpoint_storage']['cost_usd'])}",
        f"  cluster bill    {money(r['cluster_bill']['cost_usd'])} (idle nodes "
        f"{money(r['cluster_bill']['idle_cost_usd'])}); plan {money(r['plan']['cost_usd'])}",
    ]
    for pool, u in r.get("utilisation", {}).items():
        lines.append(
            f"  {pool:<15} node-hours: allocated {u['allocated']:,.0f}  idle {u['idle']:,.0f}  spare "
            f"{u['spare']:,.0f}  down {u['down']:,.0f}; {money(u['allocated_usd'])} the job's, "
            f"{money(u['unused_usd'])} the cluster's idle cost"
        )
    if r.get("reference"):
        ref = r["reference"]
        lines.append(
            f"  DeepSeek-V3     {ref['gpu_hours'] / 1e6:.3f}M GPU-hours, {money(ref['cost_usd'])}: this run "
            f"{hours['total'] / ref['gpu_hours']:.3f}x the hours, "
            f"{r['cluster_bill']['cost_usd'] / ref['cost_usd']:.3f}x the cost"
        )
    lines.append(f"  simulated in    {r['simulated_in_s']:.2f} s")
    if r.get("failure_reason") == "max_restarts_exceeded":
        lines.append(
            f"  the job used its restart budget after {r['restarts']} restarts: loosen "
            "fault_tolerance.restart_budget (restarts per window_hours) or max_restarts (a lifetime cap)"
        )
    elif r["state"] != "succeeded" and r["steps"] < r["total_steps"]:
        lines.append("  the run did not finish within the simulated time (--max-days)")
    return "\n".join(lines)


def _recovery_line(ck: dict) -> str:
    warm = f"{ck['warm_restart_s']:.1f} s warm" if ck["warm_restart_s"] is not None else "no warm path"
    return (
        f"  recovery        detect {ck['detect_s']:.1f} s, start {ck['restart_s']:.1f} s cold / {warm}, "
        "then restore and the first step"
    )


def _stat(s: dict, scale: float = 1.0, fmt: str = ",.0f") -> str:
    return f"{s['mean'] / scale:{fmt}} ± {s['std'] / scale:{fmt}}"


def render_runs(batch: dict) -> str:
    st, n = batch["stats"], len(batch["runs"])
    first = batch["runs"][0]
    return "\n".join(
        [
            f"{first['job']}: {batch['succeeded']} of {n} runs succeeded "
            f"(seeds {first['seed']}..{first['seed'] + n - 1})",
            f"  days            {_stat(st['days'], fmt='.2f')}  "
            f"(min {st['days']['min']:.2f}, max {st['days']['max']:.2f})",
            f"  GPU-hours       {_stat(st['gpu_hours'])}",
            f"  cluster bill    ${_stat(st['cost_usd'], 1e6, '.3f')}M",
            f"  goodput         {_stat(st['goodput'], 0.01, '.1f')} %",
            f"  interruptions   {_stat(st['interruptions'])}; restarts {_stat(st['restarts'])}",
        ]
    )


def render_sweep(result: dict) -> str:
    key = result["key"]
    head = (
        f"{key:>20}  {'runs ok':>7}  {'days':>15}  {'GPU-hours':>21}  {'cluster bill $M':>17}  "
        f"{'goodput %':>11}  {'restarts':>10}"
    )
    lines = [f"sweep of {key}, {result['runs']} seed(s) per point from seed {result['seed']}", head]
    for p in result["points"]:
        mark = "  <- optimum" if p["value"] == result["best"] else ""
        lines.append(
            f"{p['value']:>20}  {p['succeeded']:>3}/{p['runs']:<3}  {_stat(p['days'], fmt='.2f'):>15}  "
            f"{_stat(p['gpu_hours']):>21}  {_stat(p['cost_usd'], 1e6, '.3f'):>17}  "
            f"{_stat(p['goodput'], 0.01, '.1f'):>11}  {_stat(p['restarts']):>10}{mark}"
        )
    if result.get("young_daly_minutes"):
        lines.append(f"Young/Daly interval for this save cost and gang MTBF: {result['young_daly_minutes']:.1f} min")
    if result["best"] is None:
        lines.append("no point finished all its runs (see fault_tolerance.max_restarts and --max-days)")
    lines.append(f"chart: {result['chart']}")
    return "\n".join(lines)
