"""A served dashboard over a real state store with one queued job and one committed checkpoint, and
helpers that check the three things every attack test asserts: a clean refusal (one JSON error
shape), nothing written, and the server still answering afterwards."""

from __future__ import annotations

import json
import socket
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest

from orchestrator.checkpoint.locate import open_job_checkpoints
from orchestrator.control.rows import job_row
from orchestrator.dashboard.app import DashboardContext, create_app
from orchestrator.dashboard.tokens import ensure_tokens
from orchestrator.plan.planner import make_plan
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from tests.conftest import V3_SPEC
from tests.helpers.dashboard_server import serving

READER = "reader-" + "r" * 24
SHARD_BYTES = 3 * 1024 * 1024


def build_state(home):
    """A store with one queued miniature job whose step-10 checkpoint is committed (two 3 MiB shards)."""
    store = StateStore(f"sqlite:///{home / 'state.db'}")
    spec = load_spec(str(V3_SPEC), "local", [])
    row = job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC), "profile": "local"})
    job = store.insert_job(row)
    checkpoints = open_job_checkpoints(store.get_job(job)["spec"]["checkpoint"], job, home)
    for rank in range(2):
        checkpoints.put_shard(10, rank, bytes([rank]) * SHARD_BYTES)
    checkpoints.commit(10, 2, {"world_size": 2}, 1000.0, {})
    return store, job, spec


@contextmanager
def dashboard(home, **settings):
    """Serve a dashboard on loopback with these DashboardContext settings; yields the site dict."""
    store, job, spec = (
        build_state(home)
        if not (home / "state.db").exists()
        else (StateStore(f"sqlite:///{home / 'state.db'}"), None, None)
    )
    job = job or store.list_jobs()[0]["id"]
    tokens = home / "dashboard-tokens"
    admin = ensure_tokens(tokens) or next(
        line.split()[1] for line in tokens.read_text().splitlines() if line.startswith("admin ")
    )
    if READER not in tokens.read_text():
        with tokens.open("a") as handle:
            handle.write(f"viewer {READER} reader\n")
    cluster = SimulatedCluster(load_spec(str(V3_SPEC), "local", []))
    ctx = DashboardContext(store, cluster, tokens, home, **settings)
    with serving(create_app(ctx)) as base:
        yield {
            "base": base,
            "store": store,
            "admin": admin,
            "home": home,
            "job": job,
            "ctx": ctx,
            "port": urlsplit(base).port,
        }


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with dashboard(tmp_path_factory.mktemp("orch_home")) as served:
        yield served


def snapshot(site) -> tuple:
    """What an attack must not change: the events, the jobs, the cordons, the files under ORCH_HOME."""
    store = site["store"]
    files = sorted(
        (str(p.relative_to(site["home"])), p.stat().st_size)
        for p in site["home"].rglob("*")
        if p.is_file() and p.name not in ("state.db", "state.db-wal", "state.db-shm", "state.db-journal")
    )
    return (
        len(store.events(limit=100_000)),
        [(j["id"], j["state"], j["cancel_requested"]) for j in store.list_jobs()],
        dict(store.cordoned_nodes()),
        files,
    )


def assert_refused(response: httpx.Response, status: int) -> dict:
    """The one error shape, with a short detail."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"status", "error", "detail"} and body["status"] == status, body
    assert isinstance(body["detail"], str) and 0 < len(body["detail"]) <= 400
    return body


def assert_still_answering(site) -> None:
    assert httpx.get(site["base"] + "/healthz", timeout=10).text == "ok"
    headers = {"Authorization": f"Bearer {site['admin']}"}
    assert httpx.get(site["base"] + "/api/jobs", headers=headers, timeout=10).status_code == 200


def raw_request(site, head: bytes, body_chunks=(), pause_s: float = 0.0, read_timeout: float = 15.0) -> bytes:
    """Send bytes over a plain socket (for requests httpx will not make); what the server answered."""
    import time

    with socket.create_connection(("127.0.0.1", site["port"]), timeout=read_timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                if pause_s:
                    time.sleep(pause_s)
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed before the body was through: what we hope for
        answer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
        except (ConnectionResetError, socket.timeout):
            pass
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def json_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])
