"""The burn-down page's data over a real server: a simulated miniature run stopped part-way (so the job
is running), its spend over time, the forecast band, budget, reference and utilisation per pool."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from orchestrator.dashboard.app import DashboardContext, create_app
from orchestrator.dashboard.tokens import ensure_tokens
from orchestrator.forecast.report import job_forecast
from orchestrator.ledger.report import cost_report
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import Simulation
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.dashboard_server import serving

# the local job's own 40,000 tokens end at about 28 s of simulated time, before the spot node's notice
# (at 30 s) and loss (at 60 s); 3M tokens train on past both and the replacement
LONG = "phases.0.tokens=3000000"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    home = tmp_path_factory.mktemp("orch_home")
    url = f"sqlite:///{home / 'state.db'}"
    spec = load_spec(str(V3_SPEC), "local", ["cost.budget_usd=0.5", LONG])
    full = Simulation(spec, Scenario(trace=((60.0, "local-spot-0000"),), provision_delay_s=5.0)).run()
    stop_s = (60.0 + full["days"] * 86400) / 2  # after the spot node is lost, before the run ends
    sim = Simulation(
        spec,
        Scenario(trace=((60.0, "local-spot-0000"),), provision_delay_s=5.0, max_days=stop_s / 86400),
        state_url=url,
        start_at=time.time() - stop_s,
    )
    sim.run()
    sim.flush_running()
    store = StateStore(url)
    tokens = home / "dashboard-tokens"
    ensure_tokens(tokens)
    with serving(create_app(DashboardContext(store, sim.cluster, tokens, home))) as base:
        yield {"base": base, "store": store, "job": store.list_jobs()[0]["id"], "cluster": sim.cluster}


def test_burndown_data_is_the_ledger_and_the_forecast(site):
    job = site["job"]
    data = httpx.get(f"{site['base']}/api/jobs/{job}/burndown", timeout=60).json()
    assert data["forecast"]["state"] in ("running", "placing")  # holding its devices, part-way
    spent = data["spent"]
    assert len(spent["t"]) == 100 and spent["cost_usd"] == sorted(spent["cost_usd"])  # cumulative
    ledger = cost_report(site["store"], job, now=data["now"])
    assert spent["gpu_hours"][-1] == pytest.approx(ledger["gpu_hours"]["total"], rel=1e-6)
    assert spent["cost_usd"][-1] == pytest.approx(ledger["cost_usd"], rel=1e-6)
    fc = job_forecast(site["store"], job, now=data["now"])
    assert data["forecast"]["cost_usd"] == pytest.approx(fc["cost_usd"])  # the same seed: the same band
    assert data["forecast"]["budget"]["usd"] == 0.5 and data["forecast"]["reference"]["cost_usd"] == 5_576_000
    pools = {row["pool"]: row for row in data["utilisation"]}
    assert sum(row["gpu_hours"] for row in pools.values()) == pytest.approx(ledger["gpu_hours"]["total"], rel=1e-6)
    assert sum(row["nodes"] for row in pools.values()) == len(site["cluster"].nodes())
    assert sum(row["busy"] for row in pools.values()) == len(site["store"].list_jobs()[0]["assignment"])
    # the history columns: what the simulated cluster's own bookkeeping says for the same moment
    allocated = {p: v["gpu_hours"] for p, v in ledger["by_pool"].items()}
    for name, want in site["cluster"].utilisation(data["now"], allocated).items():
        got = pools[name]["node_hours"]
        for key in ("up", "allocated", "idle", "spare", "down"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (name, key)
    assert pools["local-spot"]["node_hours"]["down"] > 0  # the trace's lost spot node, until its replacement


def test_burndown_page_and_script_are_served_from_here(site):
    page = httpx.get(site["base"] + "/burndown", timeout=30)
    script = httpx.get(site["base"] + "/static/burndown.js", timeout=30)
    assert page.status_code == 200 and script.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for text in (page.text, script.text):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "/api/jobs/" in script.text and "burndown" in script.text
    assert httpx.get(site["base"] + "/", timeout=30).text.count('href="/burndown"') == 1
