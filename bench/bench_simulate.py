"""The simulator at full scale, and how the scheduler's decisions scale with the cluster.

The full V3 run (247,797 steps on 256 nodes x 8) is simulated with the real controller, scheduler,
interval policy and ledger; gang placement is timed on the pure scheduler from 32 to 2,048 nodes.
"""

from __future__ import annotations

from bench.harness import Section, median_ms, time_repeated
from orchestrator.cluster.placement import JobView, NodeView, schedule
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import simulate
from orchestrator.spec.loader import load_spec

COMMAND = "make bench  (bench/bench_simulate.py; or python -m bench.run_all simulate)"
SCENARIOS = [
    ("all on-demand, no interruptions", Scenario()),
    ("all spot, 0.1 interruptions/node-day, no notice", Scenario(spot_fraction=1.0, interruption_rate=0.1)),
    (
        "half spot at 0.1/node-day, 120 s notice, 4 hot spares",
        Scenario(spot_fraction=0.5, interruption_rate=0.1, notice_seconds=120, spares=4),
    ),
]


def cluster(nodes: int, spares: int = 0) -> list[NodeView]:
    views = [
        NodeView(f"n{i:05d}", "spot" if i % 2 else "on-demand", "spot" if i % 2 else "on-demand", 8)
        for i in range(nodes)
    ]
    return views + [NodeView(f"s{i:03d}", "spare", "spare", 8) for i in range(spares)]


def gang(nodes: int, job_id: str = "gang", priority: int = 0) -> JobView:
    return JobView(job_id, "pretrain", priority, 0.0, nodes, 8, ("on-demand", "spot"))


def run() -> Section:
    spec = load_spec(
        "jobs/v3_pretrain.yaml", None, ["fault_tolerance.max_restarts=10000", "fault_tolerance.restart_budget=null"]
    )
    body = [
        "Full DeepSeek-V3 run (247,797 steps, 256 nodes x 8 H800, 4 phases), one seed each:",
        "",
        "| scenario | simulated in | interruptions | restarts | days | GPU-hours | cluster bill |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, scenario in SCENARIOS:
        r = simulate(spec, scenario)
        body.append(
            f"| {name} | {r['simulated_in_s']:.2f} s | {r['interruptions']:,} | {r['restarts']:,} | "
            f"{r['days']:.2f} | {r['gpu_hours']['total'] / 1e6:.3f}M | "
            f"${r['cluster_bill']['cost_usd'] / 1e6:.3f}M |"
        )
    nodes = cluster(256, spares=4)
    v3_gang = time_repeated(lambda: schedule([gang(256)], [], nodes), 50)
    body += [
        "",
        f"Placing the 2,048-device gang (256 nodes x 8) on 260 nodes: **{median_ms(v3_gang):.2f} ms** (median of 50).",
        "",
        "Scheduling decisions against cluster size (pure scheduler, median of 20):",
        "",
        "| nodes | devices | one gang of every node | N/8 queued 8-node jobs | 16-node high-priority job "
        "preempting among N/8 running jobs |",
        "|---|---|---|---|---|",
    ]
    for size in (32, 64, 128, 256, 512, 1024, 2048):
        views = cluster(size)
        small = [gang(8, f"q{i}") for i in range(size // 8)]
        running = [
            JobView(
                f"r{i}",
                "pretrain",
                0,
                float(i),
                8,
                8,
                ("on-demand", "spot"),
                tuple(v.name for v in views[i * 8 : (i + 1) * 8]),
            )
            for i in range(size // 8)
        ]
        one = median_ms(time_repeated(lambda: schedule([gang(size)], [], views), 20))
        many = median_ms(time_repeated(lambda: schedule(small, [], views), 20))
        preempting = median_ms(time_repeated(lambda: schedule([gang(16, "urgent", 10)], running, views), 20))
        body.append(f"| {size:,} | {size * 8:,} | {one:.2f} ms | {many:.2f} ms | {preempting:.2f} ms |")
    return Section("Simulator and scheduler scale", COMMAND, body)
