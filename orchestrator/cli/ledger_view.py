"""The ledger's account of a job in words: the same lines in `orch submit`'s summary and `orch cost`.

Measured device-hours by category (start-up apart from training), by pool (an unpriced pool is
named, with the price it was charged at) and by phase, beside what the static plan said; waiting
for devices is wall time, not device-hours.
"""

from __future__ import annotations

from orchestrator.humanize import duration, money
from orchestrator.lifecycle import LedgerCategory


def hours_text(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.4f}"


def ledger_lines(figures: dict, job: dict, detail: bool = False) -> list[str]:
    hours = figures["gpu_hours"]
    device = job["spec"]["resources"]["accelerator"]["type"]
    lines = [
        f"  device-hours: {hours_text(hours['total'])} on {job['world_size']} {device} devices, "
        f"{money(figures['cost_usd'])}, goodput {figures['goodput']:.0%}",
        "    " + "  ".join(f"{c} {hours_text(hours[c.value])}" for c in LedgerCategory),
    ]
    if figures.get("queued_s"):
        lines.append(f"    waited {duration(figures['queued_s'])} for devices (queued: holds none, costs nothing)")
    plan = figures.get("plan")
    if plan:
        lines.append(
            f"    plan: {hours_text(plan['gpu_hours'])} device-hours, {money(plan['cost_usd'])} of training "
            f"compute at the expected MFU; measured training (productive + checkpoint) "
            f"{hours_text(hours['productive'] + hours['checkpoint'])}, start-up "
            f"{hours_text(hours['startup'])} apart"
        )
    if detail:
        price = job["spec"].get("cost", {}).get("price_per_gpu_hour")
        for pool, p in sorted(figures["by_pool"].items()):
            note = (
                f"  (no price_per_gpu_hour: charged cost.price_per_gpu_hour ${price:g})"
                if pool in (figures.get("unpriced_pools") or [])
                else ""
            )
            lines.append(
                f"    pool {pool} ({p['kind']}): {hours_text(p['gpu_hours'])} device-hours, "
                f"{money(p['cost_usd'])}{note}"
            )
        for phase, h in figures["by_phase"].items():
            lines.append(f"    phase {phase}: {hours_text(h)} device-hours")
    else:
        for pool in figures.get("unpriced_pools") or []:
            lines.append(f"    pool {pool} names no price: its hours are charged at cost.price_per_gpu_hour")
    return lines
