"""`orch cost [JOB] [--json]`: where the device-hours went and what they cost, against DeepSeek-V3."""

from __future__ import annotations

import argparse
import time

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.cli.ledger_view import hours_text, ledger_lines
from orchestrator.control.client import ControlPlane
from orchestrator.errors import OrchError
from orchestrator.humanize import money
from orchestrator.ledger.report import cost_report
from orchestrator.ledger.utilisation import cluster_utilisation
from orchestrator.plan.reference import REFERENCE_COST_USD


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost",
        help="device-hours by category (one job: also by pool and phase), dollars, goodput, "
        "plan vs measured, projection (all jobs or one)",
    )
    p.add_argument("job", nargs="?", help="one job (default: all jobs, newest last)")
    add_json_argument(p)
    p.set_defaults(func=cmd_cost)
    p = sub.add_parser(
        "utilisation",
        help="per pool, like sreport: node-hours up, allocated to jobs, idle or "
        "spare, and down, priced (from the controller's node history)",
    )
    add_json_argument(p)
    p.set_defaults(func=cmd_utilisation)
    p = sub.add_parser("metrics", help="serve the ledger's figures as a Prometheus endpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=9400, help="port (default: 9400)")
    p.set_defaults(func=cmd_metrics)
    p = sub.add_parser(
        "budget",
        help="set a team's GPU-hour or dollar budget (checked when jobs are admitted); "
        "without options: budgets, spend and forecast per team",
    )
    p.add_argument("team", nargs="?", help="the team (a job's spec names its team; default: every team)")
    add_json_argument(p)
    p.add_argument("--gpu-hours", type=float, help="device-hours the team may spend in all")
    p.add_argument("--usd", type=float, help="dollars the team may spend in all")
    p.add_argument("--quota-devices", type=int, help="devices the team may hold at once")
    p.set_defaults(func=cmd_budget)


def cmd_cost(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    report = cost_report(plane.store, args.job)
    if args.json:
        print_json(report)
        return 0
    rows = [report] if args.job else report["per_job"]
    for r in rows:
        job = plane.store.get_job(r["job"])
        print(f"{r['job']} ({r['team']}, {r['state']}): {money(r['cost_usd'])}, {r['tokens']:,.0f} tokens")
        for line in ledger_lines(r, job, detail=bool(args.job)):
            print(line)
        s = r.get("storage")
        if s:
            print(
                f"    storage {money(s['cost_usd'])}: checkpoints "
                f"{s['checkpoint_storage']['gib_months']:,.4g} GiB-months "
                f"{money(s['checkpoint_storage']['cost_usd'])}, {s['checkpoint_puts']['requests']:,} PUTs "
                f"{money(s['checkpoint_puts']['cost_usd'])}, {s['checkpoint_restores']['requests']:,} restore GETs "
                f"{money(s['checkpoint_restores']['cost_usd'])}, data reads {money(s['data_reads']['cost_usd'])}; "
                f"{s['retained']['checkpoints']} kept: {money(s['retained']['usd_per_month'])}/month after the run"
            )
        if r["gpu_hours_per_trillion_tokens"]:
            print(
                f"    {r['gpu_hours_per_trillion_tokens']:,.0f} device-hours per trillion tokens "
                f"(DeepSeek-V3: {r['reference']['gpu_hours_per_trillion_tokens']:,})"
            )
        p = r["projection"]
        if p:
            finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["finish_at"])) if p["finish_at"] else "-"
            print(
                f"    projection at the measured rate: {hours_text(p['gpu_hours'])} device-hours, "
                f"{money(p['cost_usd'])}, finish {finish} (DeepSeek-V3: 2,788,000 GPU-hours, "
                f"{money(REFERENCE_COST_USD)})"
            )
    if not args.job:
        h = report["gpu_hours"]
        print(
            f"all jobs: {hours_text(h['total'])} device-hours, {money(report['cost_usd'])}, "
            f"goodput {report['goodput']:.1%}"
        )
        for team, t in sorted(report["by_team"].items()):
            print(f"  team {team}: {hours_text(t['gpu_hours'])} device-hours, {money(t['cost_usd'])}")
        print("  per pool and phase: orch cost JOB")
    return 0


def cmd_utilisation(args: argparse.Namespace) -> int:
    store = ControlPlane().store
    now = store.clock.now()
    pools = cluster_utilisation(store, now)
    if args.json:
        print_json({"as_of": now, "pools": pools})
        return 0
    if not pools:
        print("no node history yet: the controller records nodes while it runs (orch up)")
        return 0
    for name, u in pools.items():
        cost = "  ".join(
            f"{k} {money(u[k + '_usd'])}"
            for k in ("allocated", "idle", "spare", "down")
            if u[k + "_usd"] is not None and u[k] > 0
        )
        print(
            f"{name} ({u['kind']}, {u['nodes']} nodes): up {u['up']:,.2f} node-hours = allocated "
            f"{u['allocated']:,.2f} + {'spare' if u['kind'] == 'spare' else 'idle'} "
            f"{u['spare'] + u['idle']:,.2f}; down {u['down']:,.2f}; cordoned {u['cordoned']:,.2f}"
            + (f"\n    {cost}" if cost else "")
        )
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    fields = {
        k: v
        for k, v in {
            "budget_gpu_hours": args.gpu_hours,
            "budget_usd": args.usd,
            "quota_devices": args.quota_devices,
        }.items()
        if v is not None
    }
    if not fields:
        return _show_budgets(args)
    if not args.team:
        raise OrchError("name the team whose budget to set: orch budget TEAM --usd N")
    store = ControlPlane().store
    store.set_team(args.team, **fields)
    store.add_event("team.budget", f"team {args.team}: {fields}", data=fields, actor="user")
    print(f"team {args.team}: " + ", ".join(f"{k} {v}" for k, v in fields.items()))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from orchestrator.forecast.prometheus import serve

    serve(ControlPlane().store, args.host, args.port)
    print(f"serving Prometheus metrics at http://{args.host}:{args.port}/metrics (Ctrl-C stops)")
    while True:
        time.sleep(3600)


def _show_budgets(args: argparse.Namespace) -> int:
    """Each team's budget beside its spend and its forecast (orch forecast's P50 and P90, summed)."""
    from orchestrator.forecast.alerts import team_outlook

    outlook = team_outlook(ControlPlane().store)
    if args.team:
        outlook = {
            args.team: outlook.get(args.team)
            or {
                "budget_usd": None,
                "budget_gpu_hours": None,
                "spent_usd": 0.0,
                "spent_gpu_hours": 0.0,
                "forecast_usd": {"p50": 0.0, "p90": 0.0},
                "forecast_gpu_hours": {"p50": 0.0, "p90": 0.0},
            }
        }
    if args.json:
        print_json(outlook)
        return 0
    for team, t in sorted(outlook.items()):
        budget = money(t["budget_usd"]) if t["budget_usd"] else "no $ budget"
        hours_budget = f", {hours_text(t['budget_gpu_hours'])} GPU-hours" if t["budget_gpu_hours"] else ""
        print(
            f"team {team}: {budget}{hours_budget}; spent {money(t['spent_usd'])} ({hours_text(t['spent_gpu_hours'])} "
            f"GPU-hours); forecast P50 {money(t['forecast_usd']['p50'])}, P90 {money(t['forecast_usd']['p90'])}"
        )
    return 0
