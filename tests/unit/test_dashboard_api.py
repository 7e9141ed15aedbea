"""The dashboard's HTTP API over a real server: every endpoint, the same data as the CLI's --json,
and the refusals (no token, a wrong token, cross-site requests, wrong content type)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import httpx
import pytest

from orchestrator.dashboard.app import DashboardContext, create_app
from orchestrator.dashboard.tokens import TokenFileError, ensure_tokens, load_tokens
from orchestrator.plan.scenario import Scenario
from orchestrator.simulate.engine import Simulation
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.dashboard_server import serving

# the local job's own 40,000 tokens end at about 28 s of simulated time, before the spot node's notice
# (at 30 s) and loss (at 60 s); 3M tokens train on past both and the replacement
LONG = "phases.0.tokens=3000000"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory):
    """A state store (SQLite, or the session's PostgreSQL server) holding a simulated run of the
    miniature (one node lost, one restart), the simulated cluster as the node provider, and a served
    dashboard."""
    home = tmp_path_factory.mktemp("orch_home")
    url = (
        f"sqlite:///{home / 'state.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres").new_database()
    )
    spec = load_spec(str(V3_SPEC), "local", [LONG])
    sim = Simulation(
        spec,
        Scenario(trace=((60.0, "local-spot-0000"),), provision_delay_s=5.0),
        state_url=url,
        start_at=time.time() - 3600,
    )
    result = sim.run()
    assert result["state"] == "succeeded" and result["restarts"] == 1
    store = StateStore(url)
    tokens = home / "dashboard-tokens"
    admin = ensure_tokens(tokens)
    with tokens.open("a") as handle:
        handle.write("alice " + "a" * 24 + "\n")
    app = create_app(DashboardContext(store, sim.cluster, tokens, home))
    with serving(app) as base:
        yield {
            "base": base,
            "store": store,
            "admin": admin,
            "home": home,
            "url": url,
            "job": result["job"],
            "cluster": sim.cluster,
        }


def get(site, path, **kw):
    return httpx.get(site["base"] + path, timeout=30, **kw)


def post(site, path, body=None, token=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return httpx.post(site["base"] + path, content=json.dumps(body or {}), headers=h, timeout=30)


def cli_json(site, *args):
    env = {**os.environ, "ORCH_HOME": str(site["home"]), "ORCH_STATE_URL": site["url"]}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_reads_are_the_cli_json(site):
    assert get(site, "/api/jobs").json() == cli_json(site, "list", "--all")
    job = site["job"]
    assert get(site, f"/api/jobs/{job}").json() == cli_json(site, "status", job)
    assert get(site, "/api/events?limit=100").json() == cli_json(site, "events", "--limit", "100")
    api_cost, cli_cost = get(site, "/api/cost").json(), cli_json(site, "cost")
    api_cost.pop("budgets")
    assert api_cost == cli_cost  # a finished job's ledger does not move with time
    assert get(site, f"/api/cost/{job}").json() == cli_json(site, "cost", job)


def test_job_series_checkpoints_nodes_and_cost_series(site):
    job = site["job"]
    metrics = get(site, f"/api/jobs/{job}/metrics").json()
    rows = site["store"].metrics(job)
    assert metrics["step"] == [r["step"] for r in rows]
    assert metrics["step"][-1] == site["store"].get_job(job)["total_steps"]  # the run's last step
    assert len(metrics["loss"]) == len(metrics["attempt"]) == len(rows)
    assert metrics["attempt"][-1] == 2  # the restart after the lost node trained the last steps
    assert get(site, f"/api/jobs/{job}/metrics?after_step=60").json()["step"][0] > 60
    ck = get(site, f"/api/jobs/{job}/checkpoints").json()
    assert ck["committed"] == [] and ck["in_flight"] == []  # simulated: no files were written
    nodes = get(site, "/api/nodes").json()
    # a surplus hot spare the controller retired is listed no more
    assert {n["name"] for n in nodes} == {name for name, n in site["cluster"].nodes_by_name.items() if n.gone is None}
    assert {n["kind"] for n in nodes} == {"on-demand", "spot", "spare"}
    series = get(site, "/api/cost/series?samples=50").json()
    assert len(series["t"]) == 50 and series["t"] == sorted(series["t"])
    total = get(site, "/api/cost").json()["gpu_hours"]
    for category in ("productive", "recovery", "lost", "startup"):
        assert series[category][-1] == pytest.approx(total[category], rel=1e-9, abs=1e-12)
        assert all(a <= b + 1e-12 for a, b in zip(series[category], series[category][1:]))  # cumulative
    summary = get(site, "/api/summary").json()
    assert summary["jobs"] == {"succeeded": 1} and summary["nodes"] == len(nodes)
    assert get(site, "/api/jobs/no-such-job").status_code == 404
    assert post(site, f"/api/jobs/{job}/checkpoints/5/verify", token=site["admin"]).status_code == 404
    assert get(site, f"/api/jobs/{job}/checkpoints/5/verify").status_code == 405  # an action, not a read


def test_openapi_describes_every_api_route_and_no_cdn_docs(site):
    spec = get(site, "/openapi.json").json()
    paths = set(spec["paths"])
    for route in (
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/metrics",
        "/api/nodes",
        "/api/events",
        "/api/cost",
        "/api/cost/series",
        "/api/nodes/{node}/{action}",
        "/api/jobs/{job_id}/cancel",
    ):
        assert route in paths
    assert get(site, "/docs").status_code == 404 and get(site, "/redoc").status_code == 404  # they load CDN scripts


def test_pages_load_nothing_from_elsewhere(site):
    page = get(site, "/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for text in (page.text, get(site, "/static/app.js").text, get(site, "/static/app.css").text):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
        assert "cdn" not in text.lower()
    plotly = get(site, "/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000 and b"plotly" in plotly.content[:2000].lower()
    assert get(site, "/static/../app.py").status_code == 404
    assert get(site, "/static/tokens.py").status_code == 404


def test_no_cors_is_granted(site):
    evil = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in get(site, "/api/jobs", headers=evil).headers
    preflight = httpx.options(
        site["base"] + "/api/nodes/local-spare-0000/cordon",
        headers={
            **evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_actions_are_refused_without_a_good_token_or_from_another_site(site):
    node = "local-spare-0000"
    path = f"/api/nodes/{node}/cordon"
    before = len(site["store"].events(limit=10_000))
    assert post(site, path).status_code == 401
    assert post(site, path, token="not-a-token-at-all").status_code == 403
    assert post(site, path, token=site["admin"], headers={"Origin": "https://evil.example"}).status_code == 403
    assert post(site, path, token=site["admin"], headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    form = httpx.post(site["base"] + path, data={"reason": "x"}, headers={"Authorization": f"Bearer {site['admin']}"})
    assert form.status_code == 415
    assert get(site, "/api/whoami").status_code == 401
    assert node not in site["store"].cordoned_nodes()  # nothing was done by any refused request
    assert len(site["store"].events(limit=10_000)) == before


def test_an_operator_action_is_done_and_logged_with_who_did_it(site):
    node = "local-spare-0000"
    same_origin = {"Origin": site["base"], "Sec-Fetch-Site": "same-origin"}
    r = post(site, f"/api/nodes/{node}/cordon", {"reason": "bad fan"}, token="a" * 24, headers=same_origin)
    assert r.status_code == 200, r.text
    assert r.json()["actor"] == "dashboard:alice@127.0.0.1"
    assert site["store"].cordoned_nodes()[node] == "cordon: bad fan"
    event = [e for e in site["store"].events(limit=10_000) if e["kind"] == "node.cordon"][-1]  # the newest
    assert event["actor"] == "dashboard:alice@127.0.0.1" and node in event["message"]
    assert post(site, f"/api/nodes/{node}/uncordon", token=site["admin"]).status_code == 200
    assert node not in site["store"].cordoned_nodes()
    assert post(site, "/api/nodes/nope/cordon", token=site["admin"]).status_code == 404
    assert post(site, f"/api/nodes/{node}/reboot", token=site["admin"]).status_code == 404
    assert post(site, f"/api/nodes/{node}/preempt", token=site["admin"]).status_code == 501  # no embedded cluster
    assert get(site, "/api/whoami", headers={"Authorization": f"Bearer {site['admin']}"}).json() == {
        "actor": "dashboard:admin@127.0.0.1"
    }


def test_cancel_refuses_a_finished_job_and_cancels_a_queued_one(site):
    store, job = site["store"], site["job"]
    assert post(site, f"/api/jobs/{job}/cancel", token=site["admin"]).status_code == 409
    row = {
        k: v
        for k, v in store.get_job(job).items()
        if k in ("name", "team", "priority", "spec", "source", "world_size", "nodes", "devices_per_node", "total_steps")
    }
    queued = store.insert_job({**row, "id": "queued-one"})
    r = post(site, f"/api/jobs/{queued}/cancel", token=site["admin"])
    assert r.status_code == 200 and store.get_job(queued)["cancel_requested"]
    assert [e for e in store.events(queued) if e["kind"] == "job.cancel_requested"][0]["actor"].startswith(
        "dashboard:admin@"
    )


def test_token_file_is_private_and_checked(tmp_path):
    path = tmp_path / "tokens"
    token = ensure_tokens(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and load_tokens(path) == {"admin": token}
    assert ensure_tokens(path) is None  # never overwritten
    path.write_text("admin short\n")
    with pytest.raises(TokenFileError, match="16"):
        load_tokens(path)


def test_cli_refuses_a_bad_port(tmp_path):
    env = {**os.environ, "ORCH_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dashboard", "--port", "70000", "--no-cluster"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2 and "--port" in out.stderr and "Traceback" not in out.stderr
