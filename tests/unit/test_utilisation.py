"""Cluster utilisation per pool on the live path (``ledger/utilisation.py``): node-hours up, allocated
to jobs, idle or spare, and down, priced, from the node changes the controller records in the state
store (``node_history``, one writer) and the ledger's allocation."""

from __future__ import annotations

import pytest

from orchestrator.clock import ManualClock
from orchestrator.control.controller import ControllerCore
from orchestrator.control.rows import job_row
from orchestrator.ledger.utilisation import cluster_utilisation, utilisation
from orchestrator.plan.planner import make_plan
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.simulate.engine import Simulation
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.recording_launcher import RecordingLauncher

# the local job's own 40,000 tokens end at about 28 s of simulated time, before the spot node's notice
# (at 30 s) and loss (at 60 s); 3M tokens train on past both and the replacement
LONG = "phases.0.tokens=3000000"


def change(name: str, pool: str, kind: str, state: str, at: float) -> dict:
    return {"name": name, "pool": pool, "pool_kind": kind, "devices": 2, "state": state, "at": at}


def test_utilisation_by_hand():
    """Two spot nodes (2 devices, $0.80) and a spare ($2.00) over two hours. a: up, lost at 1 h,
    replaced at 1.5 h. b: up, cordoned from 0.5 h to 1 h. c (spare): up. d: listed at 1 h while
    being provisioned (not down: it never came up), up at 1.5 h, gone at 1.75 h.
    Jobs were allocated 4 spot device-hours (2 node-hours) and 1 spare device-hour."""
    h = 3600.0
    history = [
        change("a", "spot", "spot", "up", 0),
        change("b", "spot", "spot", "up", 0),
        change("c", "spare", "spare", "up", 0),
        change("b", "spot", "spot", "cordoned", 0.5 * h),
        change("a", "spot", "spot", "down", h),
        change("b", "spot", "spot", "up", h),
        change("d", "spot", "spot", "down", h),
        change("a", "spot", "spot", "up", 1.5 * h),
        change("d", "spot", "spot", "up", 1.5 * h),
        change("d", "spot", "spot", "gone", 1.75 * h),
    ]
    u = utilisation(history, {"spot": 4.0, "spare": 1.0}, {"spot": 0.8, "spare": 2.0}, 2 * h)
    spot, spare = u["spot"], u["spare"]
    # up: a 1.5 h + b 2 h + d 0.25 h; down: a 0.5 h; allocated 2 h; idle the rest
    assert (spot["up"], spot["down"], spot["cordoned"], spot["nodes"]) == pytest.approx((3.75, 0.5, 0.5, 3))
    assert (spot["allocated"], spot["idle"], spot["spare"]) == pytest.approx((2.0, 1.75, 0.0))
    assert (spot["allocated_usd"], spot["idle_usd"], spot["down_usd"]) == pytest.approx((3.2, 2.8, 0.8))
    assert (spare["up"], spare["allocated"], spare["spare"], spare["idle"]) == pytest.approx((2.0, 0.5, 1.5, 0.0))
    assert (spare["allocated_usd"], spare["spare_usd"]) == pytest.approx((2.0, 6.0))
    # unpriced pools say so rather than pricing at zero; allocation never exceeds the recorded up time
    u = utilisation(history, {"spot": 100.0}, {}, 2 * h)
    assert u["spot"]["allocated"] == pytest.approx(3.75) and u["spot"]["idle_usd"] is None


def test_the_controller_records_each_node_change_once(tmp_path):
    spec = load_spec(V3_SPEC, "local")
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    cluster = SimulatedCluster(spec, 1000.0)
    core = ControllerCore(store, cluster, RecordingLauncher(), clock)
    store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC)}))
    core.reconcile()
    clock.advance(1)
    core.reconcile()
    names = [n.name for n in cluster.nodes()]
    assert [(r["name"], r["state"], r["at"]) for r in store.node_history()] == [(n, "up", 1000.0) for n in names]
    spot = next(n for n in names if "spot" in n)
    clock.advance(100)
    cluster.fail(spot, clock.now())
    core.reconcile()
    core.reconcile()  # nothing changed: nothing written
    clock.advance(50)
    cluster.replace(spot, clock.now())
    cluster.cordon(spot)
    # a restarted controller reads the newest states back and writes only what changed since
    ControllerCore(store, cluster, RecordingLauncher(), clock).reconcile()
    assert [(r["name"], r["state"], r["at"]) for r in store.node_history()[len(names) :]] == [
        (spot, "down", 1101.0),
        (spot, "cordoned", 1151.0),
    ]


def test_live_utilisation_equals_the_simulators_own_bookkeeping(tmp_path):
    """The simulator runs the real controller, so its state store holds the node history a live run
    would: computed from it, utilisation matches the simulated cluster's own up/down accounting
    (a spot node lost at 60 s, replaced 5 s later, while the run goes on; a hot spare
    provisioned meanwhile and retired as surplus)."""
    spec = load_spec(V3_SPEC, "local", [LONG])
    sim = Simulation(
        spec,
        Scenario(trace=((60.0, "local-spot-0000"),), provision_delay_s=5.0),
        state_url=f"sqlite:///{tmp_path / 'state.db'}",
    )
    result = sim.run()
    assert result["state"] == "succeeded" and result["restarts"] == 1
    live = cluster_utilisation(sim.store, now=sim.clock.now())
    for pool, want in result["utilisation"].items():
        for key in ("allocated", "idle", "spare", "down", "up", "allocated_usd"):
            assert live[pool][key] == pytest.approx(want[key], abs=1e-9), (pool, key)
    assert live["local-spot"]["down"] == pytest.approx(5.0 / 3600)
    assert sim.store.events_of(["node.retired"])  # the surplus spare left the bill when it was retired


def test_orch_utilisation_shows_the_history(orch_home):
    """`orch utilisation` reads the store under ORCH_HOME; without a job the dollars use the default price
    of no spec, so the pool is shown unpriced. A node down from 1 h to 1.5 h ago: 0.5 node-hours down."""
    import json
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    start = time.time() - 7200
    clock = ManualClock(start)
    store = StateStore(f"sqlite:///{orch_home / 'state.db'}", clock)
    node = {"name": "n1", "pool": "spot", "pool_kind": "spot", "devices": 2}
    for state, at in (("up", start), ("down", start + 3600), ("up", start + 5400)):
        clock.advance(at - clock.now())
        store.record_node_changes([{**node, "state": state}])

    def run(*args):
        env = {**os.environ, "ORCH_HOME": str(orch_home), "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "utilisation", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )

    data = json.loads(run("--json").stdout)
    spot = data["pools"]["spot"]
    assert spot["down"] == pytest.approx(0.5) and spot["up"] == pytest.approx(1.5, abs=0.01)
    assert spot["price_per_device_hour"] is None and spot["idle_usd"] is None
    text = run().stdout
    assert text.startswith("spot (spot, 1 nodes): up 1.5") and "down 0.50" in text
