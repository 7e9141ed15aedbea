"""`orch cost [JOB] [--json]`: where the device-hours went and what they cost, against DeepSeek-V3."""

from __future__ import annotations

import argparse
import time

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.control.client import ControlPlane
from orchestrator.plan.render import money

CATEGORIES = ("productive", "checkpoint", "recovery", "lost", "queued")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="GPU-hours by category and phase, dollars, goodput, projection (all jobs or one)")
    p.add_argument("job", nargs="?")
    add_json_argument(p)
    p.set_defaults(func=cmd_cost)
    p = sub.add_parser("metrics", help="serve the ledger's figures as a Prometheus endpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9400)
    p.set_defaults(func=cmd_metrics)
    p = sub.add_parser("budget", help="set a team's GPU-hour or dollar budget (checked when jobs are admitted)")
    p.add_argument("team")
    p.add_argument("--gpu-hours", type=float)
    p.add_argument("--usd", type=float)
    p.add_argument("--quota-devices", type=int, help="devices the team may hold at once")
    p.set_defaults(func=cmd_budget)


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.4f}"


def cmd_cost(args: argparse.Namespace) -> int:
    from orchestrator.ledger.report import cost_report

    report = cost_report(ControlPlane().store, args.job)
    if args.json:
        print_json(report)
        return 0
    rows = [report] if args.job else report["per_job"]
    for r in rows:
        h = r["gpu_hours"]
        print(f"{r['job']} ({r['team']}, {r['state']}): {_hours(h['total'])} device-hours, {money(r['cost_usd'])}, "
              f"goodput {r['goodput']:.1%}, {r['tokens']:,.0f} tokens")
        print("    " + "  ".join(f"{c} {_hours(h[c])}" for c in CATEGORIES))
        if r["gpu_hours_per_trillion_tokens"]:
            print(f"    {r['gpu_hours_per_trillion_tokens']:,.0f} device-hours per trillion tokens "
                  f"(DeepSeek-V3: {r['reference']['gpu_hours_per_trillion_tokens']:,})")
        p = r["projection"]
        if p:
            finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["finish_at"])) if p["finish_at"] else "-"
            print(f"    projection at the measured rate: {_hours(p['gpu_hours'])} device-hours, "
                  f"{money(p['cost_usd'])}, finish {finish} (DeepSeek-V3: 2,788,000 GPU-hours, $5.576M)")
    if not args.job:
        h = report["gpu_hours"]
        print(f"all jobs: {_hours(h['total'])} device-hours, {money(report['cost_usd'])}, "
              f"goodput {report['goodput']:.1%}")
        for team, t in sorted(report["by_team"].items()):
            print(f"  team {team}: {_hours(t['gpu_hours'])} device-hours, {money(t['cost_usd'])}")
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    fields = {k: v for k, v in {"budget_gpu_hours": args.gpu_hours, "budget_usd": args.usd,
                                "quota_devices": args.quota_devices}.items() if v is not None}
    if not fields:
        from orchestrator.errors import OrchError

        raise OrchError("give --gpu-hours, --usd or --quota-devices")
    store = ControlPlane().store
    store.set_team(args.team, **fields)
    store.add_event("team.budget", f"team {args.team}: {fields}", data=fields, actor="user")
    print(f"team {args.team}: " + ", ".join(f"{k} {v}" for k, v in fields.items()))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from orchestrator.ledger.prometheus import serve

    serve(ControlPlane().store, args.host, args.port)
    print(f"serving Prometheus metrics at http://{args.host}:{args.port}/metrics (Ctrl-C stops)")
    while True:
        time.sleep(3600)
