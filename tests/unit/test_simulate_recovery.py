"""The simulator's recovery is the runtime's sequence with the measured costs.

detect -> replace (a spare at once, or a new node after the provisioning delay) -> rejoin (warm only
when every node of the new gang has its workers up) -> restore (object storage or a peer's memory) ->
first step; the figures are ``plan/recovery.py``'s ``MEASURED``, which must be what
bench/RESULTS.md's recovery section says.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.plan.costs import scenario_costs
from orchestrator.plan.planner import make_plan
from orchestrator.plan.recovery import COLD, MEASURED, RESULTS_SECTION, shard_restore_from_memory
from orchestrator.plan.scenario import Scenario, apply_scenario
from orchestrator.simulate.engine import Simulation
from orchestrator.spec.loader import load_spec
from tests.conftest import V3_SPEC

RESULTS = Path(__file__).parents[2] / "bench" / "RESULTS.md"
SHORT = [
    "phases=[{name: pre_training, seq_len: 4096, global_batch: 15360, tokens: 1.0e11}]",
    "checkpoint.interval={minutes: 30}",
]
HOUR = 3600.0
PARTS = {
    "detect_s": ("detect",),
    "replace_s": ("re-place", "replace"),
    "rejoin_s": ("start workers", "rejoin"),
    "restore_s": ("restore",),
    "first_step_s": ("first step",),
}  # column names, old table and new


def _number(cell: str) -> float:
    return float(cell.split()[0])  # "0.50 (storage)" -> 0.5


def _recovery_table() -> tuple[str, dict[str, dict[str, float]]]:
    """RESULTS.md's recovery rows as MeasuredRecovery fields (a rejoin split into parts is summed)."""
    text = RESULTS.read_text()
    section = next(s for s in text.split("\n## ") if s.startswith(RESULTS_SECTION))
    rows = [
        [c.strip(" *") for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    header = [c.lower() for c in rows[0]]
    columns = {
        field: [i for i, c in enumerate(header) if c.startswith(names) and "->" not in c]
        for field, names in PARTS.items()
    }
    return section, {
        cells[0]: {field: round(sum(_number(cells[i]) for i in where), 6) for field, where in columns.items()}
        for cells in rows[1:]
    }


def test_the_measured_recovery_table_is_what_results_md_says():
    section, table = _recovery_table()
    for path, measured in MEASURED.items():
        if measured is None:
            continue  # not measured yet: the simulator leaves that path out
        assert measured.row in table, f"{path}: no row '{measured.row}' in RESULTS.md (update plan/recovery.py)"
        for field in PARTS:
            assert getattr(measured, field) == table[measured.row][field], (
                f"plan/recovery.py MEASURED[{path!r}].{field} differs from bench/RESULTS.md: update the table"
            )
        assert f"commit {measured.commit}" in section


def test_the_simulator_defaults_are_the_measured_figures():
    scenario, warm = Scenario(), MEASURED["warm"]
    assert scenario.restart_s == COLD.rejoin_s
    assert scenario.detect_s == (warm or COLD).detect_s
    assert scenario.warm_restart_s == (warm.rejoin_s if warm else None)
    assert scenario.restore_from == ("memory" if warm else "storage")


def _downtime(spec, scenario: Scenario, loss_at: float) -> tuple[float, Simulation]:
    """Seconds from the job entering recovery after the trace's loss to its next attempt's first step."""
    sim = Simulation(spec, replace(scenario, max_days=(loss_at + 2 * HOUR) / 86400))
    result = sim.run()
    recovering = [t["at"] for t in sim.store.transitions(result["job"]) if t["to_state"] == "recovering"]
    assert len(recovering) == 1 and result["restarts"] == 1
    (attempt,) = sim.launcher.running()
    return attempt.ready_at - recovering[0], sim


@pytest.fixture(scope="module")
def spec():
    return load_spec(str(V3_SPEC), None, SHORT)


def test_a_loss_onto_a_spare_costs_detect_cold_start_and_restore_from_storage(spec):
    scenario = Scenario(
        trace=((HOUR, "gpu-on-demand-0003"),),
        spares=1,
        detect_s=COLD.detect_s,
        warm_restart_s=None,
        restore_from="storage",
    )  # the cold path only
    down, sim = _downtime(spec, scenario, HOUR)
    costs = sim.costs
    assert costs.restore_s == pytest.approx(costs.checkpoint_bytes / 100e9)
    assert down == pytest.approx(COLD.detect_s + COLD.rejoin_s + costs.restore_s)


def test_warm_workers_on_a_spare_and_survivors_restore_from_a_peers_memory(spec):
    scenario = Scenario(trace=((HOUR, "gpu-on-demand-0003"),), spares=1, warm_restart_s=3.0, restore_from="memory")
    down, sim = _downtime(spec, scenario, HOUR)
    detect = scenario.detect_s
    plan = make_plan(apply_scenario(spec, scenario))
    memory = shard_restore_from_memory(sim.costs.checkpoint_bytes, plan.mesh.world_size, 50.0, 10.0)
    assert sim.costs.restore_s == pytest.approx(memory) and memory < 1.0  # 4.7 GB a rank: 0.09 s + 0.47 s
    assert down == pytest.approx(detect + 3.0 + memory)


def test_a_new_node_in_place_of_the_lost_one_starts_cold(spec):
    # no spare: the gang waits for the replacement, whose workers start from nothing
    scenario = Scenario(
        trace=((HOUR, "gpu-on-demand-0003"),), provision_delay_s=600.0, warm_restart_s=3.0, restore_from="memory"
    )
    down, sim = _downtime(spec, scenario, HOUR)
    assert down == pytest.approx(600.0 + scenario.detect_s + COLD.rejoin_s + sim.costs.restore_s)


def test_after_a_save_on_notice_nothing_is_detected(spec):
    scenario = Scenario(
        spot_fraction=1.0, notice_seconds=120, spares=1, trace=((HOUR + 600, "sim-spot-0003"),), warm_restart_s=3.0
    )
    down, sim = _downtime(spec, scenario, HOUR + 600)
    assert sim.counts["saved_on_notice"] == 1
    assert down == pytest.approx(3.0 + sim.costs.restore_s)  # a warm start on the spare, no detection


def test_restore_costs_scale_with_the_checkpoint_not_the_miniature():
    plan = make_plan(load_spec(str(V3_SPEC), None, []))
    costs = scenario_costs(plan, Scenario(restore_from="storage"))
    # 9.56 TB of V3 state over 100 GB/s of storage: the miniature's measured 0.5 s does not carry over
    assert costs.checkpoint_bytes == pytest.approx(9.557e12, rel=1e-3)
    assert costs.restore_s == pytest.approx(95.57, rel=1e-3)


def test_a_step_only_in_memory_is_trained_again_when_the_node_and_its_buddy_go_together(spec):
    """With the in-memory tier a step is restorable seconds after its save starts, long before its
    upload commits; a lone node loss resumes from it (its buddy holds the copies), but a node lost with
    its buddy takes every copy of its ranks: the gang restores the durable step from object storage,
    trains the steps since then again, and the ledger counts them lost, not productive twice."""
    from orchestrator.ledger.intervals import summarize
    from orchestrator.ledger.report import job_intervals

    base = Scenario(spares=2, warm_restart_s=3.0, restore_from="memory")
    probe = Simulation(spec, replace(base, max_days=2 * HOUR / 86400))
    job_id = probe.run()["job"]
    (first,) = probe.launcher.running()
    gang = list(first.nodes)
    durable, saved = first.save_steps[:2]  # the second save: its upload takes 96 s, its memory commit 8.3 s
    costs = probe.costs
    assert costs.memory_commit_s < 30 < costs.save_s
    loss_at = first.ready_at + first.timeline.seconds(0, saved) + 30
    results = {}
    for name, lost in (("alone", (gang[2],)), ("with its buddy", (gang[2], gang[3]))):
        sim = Simulation(
            spec, replace(base, trace=tuple((loss_at, n) for n in lost), max_days=(loss_at + HOUR) / 86400)
        )
        sim.run()
        (second,) = sim.launcher.running()
        sim.flush_running()
        now = sim.clock.now()
        hours = summarize(job_intervals(sim.store, sim.store.job(job_id), now))["gpu_hours"]
        world = sim.store.get_job(job_id)["world_size"]
        results[name] = (second, hours, world)
    alone, together = results["alone"][0], results["with its buddy"][0]
    assert (alone.start_step, alone.redo_until) == (saved, None)
    assert (together.start_step, together.redo_until) == (durable, saved)
    # from the buddy's memory in under a second; from object storage in 96 s
    assert (
        alone.ready_at - loss_at < costs.storage_restore_s / 2 < costs.storage_restore_s < together.ready_at - loss_at
    )
    for second, hours, world in results.values():  # every step trained is productive exactly once
        productive_s = hours["productive"] * 3600 / world  # (the step under way now counts as it goes)
        tl = second.timeline
        assert tl.seconds(0, second.step) <= productive_s < tl.seconds(0, second.step + 1)
    # and the lost work is what the lone loss lost plus the steps between the two checkpoints, trained again
    redone = tl.seconds(durable, saved) * results["alone"][2] / 3600
    assert results["with its buddy"][1]["lost"] == pytest.approx(results["alone"][1]["lost"] + redone, rel=1e-3)
