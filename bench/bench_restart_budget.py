"""The V3 job at Meta's failure rate, and half-spot at one interruption per node-day, simulated with
the measured recovery costs (``plan/recovery.py``): goodput, and what the losses are made of.

The first row is what the simulator does by default; the others change one recovery option each
(what-ifs, not measurements of orch) to show what dominates. The half-spot case runs with the spec's
restart budget, which stops it.
"""

from __future__ import annotations

from dataclasses import replace

from bench.harness import Section
from orchestrator.plan.recovery import COLD, WARM
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import simulate
from orchestrator.spec.loader import load_spec

SPEC = "jobs/v3_pretrain.yaml"
META = (
    "--spot-fraction 1 --spot-price 2.0 --interruption-rate 0.0237 --notice 0 --spares 4",
    Scenario(spot_fraction=1.0, spot_price=2.0, interruption_rate=0.0237, notice_seconds=0, spares=4),
)
HALF = (
    "--spot-fraction 0.5 --interruption-rate 1 --notice 120 --spares 4",
    Scenario(spot_fraction=0.5, interruption_rate=1.0, notice_seconds=120, spares=4),
)
COMMAND = (
    f"python -m bench.run_all restart_budget  (orch simulate {SPEC} {META[0]} --json; "
    f"the what-ifs add the options named; half spot: {HALF[0]})"
)
FREE = {"warm_restart_s": 0.0, "restore_from": "memory"}
WHAT_IFS = [
    ("measured costs (the simulator's defaults: warm path)", {}),
    (
        f"the cold path: `--warm-restart {COLD.rejoin_s:g} --restore-from storage`",
        {"warm_restart_s": COLD.rejoin_s, "restore_from": "storage"},
    ),
    ("free recovery: `--warm-restart 0 --restore-from memory`", FREE),
    ("also `--detect 0`", {**FREE, "detect_s": 0.0}),
    ("free recovery and `--checkpoint-interval 2` (minutes)", {**FREE, "checkpoint_interval": "2"}),
]


def _row(name: str, r: dict) -> str:
    h = r["gpu_hours"]
    return (
        f"| {name} | {r['restarts']} | {r['days']:.2f} | {r['goodput']:.2%} | {h['lost']:,.0f} / "
        f"{h['recovery']:,.0f} / {h['checkpoint']:,.0f} | {r['checkpoints']['saves']:,} | "
        f"{r['simulated_in_s']:.1f} s |"
    )


def run() -> Section:
    spec = load_spec(SPEC, None, [])
    runs = [(name, simulate(spec, replace(META[1], **change))) for name, change in WHAT_IFS]
    base = runs[0][1]
    h, ck = base["gpu_hours"], base["checkpoints"]
    lost_s = h["lost"] * 3600 / 2048 / max(1, base["restarts"])
    half = simulate(spec, HALF[1])
    body = [
        "0.0237 failures per node-day is Meta's mean time to failure of 7.9 h at 1,024 GPUs: on 256 nodes one "
        "about every 4 h. Restart budget: the spec's `{restarts: 48, window_hours: 24, crash_restarts: 2}`. "
        f"Recovery costs, measured by bench_recovery (bench/RESULTS.md) and scaled by plan/recovery.py: detect "
        f"{ck['detect_s']:.1f} s; a start of {ck['warm_restart_s']:.1f} s when every node of the gang has warm "
        f"workers (survivors, hot spares), {ck['restart_s']:.1f} s cold (the miniature's: lower bounds at V3 "
        f"scale); the {ck['checkpoint_bytes'] / 1e12:.2f} TB checkpoint from a peer's memory "
        f"({ck['restore_s']:.2f} s: a rank's shard at 50 GB/s, then to the device) or, on the cold path, object "
        "storage (96 s at 100 GB/s); the first step is an ordinary step of the V3 timeline (the miniature's "
        f"measured {WARM.first_step_s:g} s is not carried over). Rows 2-5 are what-ifs with the options named.",
        "",
        "| scenario | restarts | days | goodput | GPU-hours lost / recovery / checkpoint | saves | simulated in |",
        "|---|---|---|---|---|---|---|",
    ]
    body += [_row(name, r) for name, r in runs]
    body += [
        "",
        f"State of the first run: {base['state']}, {base['steps']:,} of {base['total_steps']:,} steps. "
        f"Goodput: **{base['goodput']:.1%}** (issue target 98.5%: "
        f"{'met' if base['goodput'] >= 0.985 else 'NOT met'}). The work lost at each failure dominates: "
        f"{h['lost'] / h['total']:.2%} of the GPU-hours, {lost_s:.0f} s of the gang per failure on average, "
        "about half the `auto` interval plus the time by which a step becomes restorable after its save "
        f"starts: {ck['memory_commit_s']:.1f} s once it is committed in memory (every rank's shard to host, "
        f"encoded and hashed, copied to its buddy node; docs/checkpoints.md), against the {ck['save_s']:.0f} s "
        f"upload on the cold path's row; recovery is {h['recovery'] / h['total']:.2%}, saves "
        f"{h['checkpoint'] / h['total']:.2%}.",
        "",
        f"Half spot at one interruption per spot node-day ({HALF[0]}), the spec's budget: {half['state']} "
        f"({half['failure_reason'] or '-'}) after {half['days']:.2f} days, {half['steps']:,} of "
        f"{half['total_steps']:,} steps, {half['interruptions']} interruptions "
        f"({half['interruptions_hitting_job']} hitting the job, {half['saved_on_notice']} saved on notice), "
        f"{half['restarts']} restarts, goodput "
        f"{half['goodput']:.1%}, cluster bill ${half['cluster_bill']['cost_usd']:,.0f}; simulated in "
        f"{half['simulated_in_s']:.1f} s.",
        "",
        "The spec's budget stays at 48 a day: 128 spot nodes at one interruption a day restart the gang "
        "about 128 times a day, 21 times Meta's rate, and a 120 s notice rarely covers a 20 s step plus the "
        "upload, so the budget stopping that run within hours is the budget doing its job. The V3 spec's own "
        "pools are on demand; a spec that chooses such spot pools on purpose sizes its budget from them "
        "(expected restarts a window, 128 here, times a margin, e.g. "
        "`--set fault_tolerance.restart_budget.restarts=200`), and the failure's message names the field.",
    ]
    return Section("The V3 job at Meta's failure rate (restart budget)", COMMAND, body)
