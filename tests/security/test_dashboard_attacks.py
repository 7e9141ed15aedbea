"""Attacks on the dashboard over real HTTP: DNS rebinding, reads beyond loopback, CSRF, forged proxy
headers, oversized, malformed and slow bodies, header injection, path traversal, and the checkpoint
verification that used to read terabytes per unauthenticated GET. Each asserts a clean refusal in the
one JSON error shape, nothing written, and the server still answering."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.security.conftest import (
    READER,
    assert_refused,
    assert_still_answering,
    dashboard,
    json_of,
    raw_request,
    snapshot,
    status_of,
)

CORDON = "/api/nodes/local-spare-0000/cordon"


def post(site, path, body=b"{}", token=None, headers=None, **kw):
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return httpx.post(site["base"] + path, content=body, headers=h, timeout=30, **kw)


def get(site, path, **kw):
    return httpx.get(site["base"] + path, timeout=30, **kw)


def test_dns_rebinding_host_is_refused_for_reads_and_actions(site):
    before = snapshot(site)
    for host in ("evil.example", "evil.example:8267", "127.0.0.1.evil.example", "localhost.", ""):
        assert_refused(get(site, "/api/jobs", headers={"Host": host}), 421)
        assert_refused(post(site, CORDON, token=site["admin"], headers={"Host": host}), 421)
    assert get(site, "/api/jobs", headers={"Host": "localhost:1234"}).status_code == 200  # loopback names are ours
    assert get(site, "/api/jobs", headers={"Host": "[::1]:8267"}).status_code == 200
    assert get(site, "/healthz", headers={"Host": "10.1.2.3:8267"}).text == "ok"  # the kubelet probes by pod IP
    assert snapshot(site) == before
    assert_still_answering(site)


def test_beyond_loopback_every_read_needs_a_token_and_a_reader_cannot_act(tmp_path):
    with dashboard(tmp_path, read_token_required=True, allowed_hosts=("orch.internal",)) as site:
        before = snapshot(site)
        for path in (
            "/api/jobs",
            "/api/summary",
            "/api/events",
            "/api/cost",
            f"/api/jobs/{site['job']}",
            "/openapi.json",
        ):
            assert_refused(get(site, path), 401)
            assert_refused(get(site, path, headers={"Authorization": "Bearer " + "x" * 30}), 403)
            assert get(site, path, headers={"Authorization": f"Bearer {READER}"}).status_code == 200
        assert get(site, "/").status_code == 200 and get(site, "/static/app.js").status_code == 200  # no data
        assert (
            get(site, "/api/jobs", headers={"Host": "orch.internal", "Authorization": f"Bearer {READER}"}).status_code
            == 200
        )
        assert_refused(post(site, CORDON, token=READER), 403)
        assert_refused(get(site, "/api/whoami", headers={"Authorization": f"Bearer {READER}"}), 403)
        assert snapshot(site) == before
        assert_still_answering(site)


def test_csrf_is_refused(site):
    before = snapshot(site)
    admin = site["admin"]
    assert_refused(post(site, CORDON, token=admin, headers={"Origin": "https://evil.example"}), 403)
    assert_refused(post(site, CORDON, token=admin, headers={"Origin": "null"}), 403)
    assert_refused(post(site, CORDON, token=admin, headers={"Sec-Fetch-Site": "cross-site"}), 403)
    assert_refused(post(site, CORDON, token=admin, headers={"Sec-Fetch-Site": "same-site"}), 403)
    # what a cross-site <form> can send: no token, a form content type
    form = httpx.post(site["base"] + CORDON, data={"reason": "x"}, timeout=30)
    assert_refused(form, 415)
    plain = httpx.post(site["base"] + CORDON, content=b'{"reason":"x"}', headers={"Content-Type": "text/plain"})
    assert_refused(plain, 415)
    assert_refused(post(site, CORDON), 401)
    assert_refused(post(site, CORDON, headers={"Authorization": "Basic YWRtaW46eA=="}), 401)
    assert snapshot(site) == before
    assert_still_answering(site)


def test_public_url_behind_a_tls_ingress_is_the_origin_actions_come_from(tmp_path):
    with dashboard(tmp_path, public_url="https://orch.example.com") as site:
        ingress = {"Host": "orch.example.com", "Origin": "https://orch.example.com"}
        ok = post(site, CORDON, token=site["admin"], headers=ingress)
        assert ok.status_code == 200, ok.text
        before = snapshot(site)
        for origin in ("http://orch.example.com", f"http://127.0.0.1:{site['port']}", "https://evil.example"):
            assert_refused(post(site, CORDON, token=site["admin"], headers={**ingress, "Origin": origin}), 403)
        assert snapshot(site) == before
        assert_still_answering(site)


def test_forwarded_headers_count_only_from_a_trusted_proxy(tmp_path):
    forwarded = {
        "Origin": "https://orch.example.com",
        "X-Forwarded-Host": "orch.example.com",
        "X-Forwarded-Proto": "https",
    }
    with dashboard(tmp_path, trusted_proxies=("127.0.0.1",), allowed_hosts=("orch.example.com",)) as site:
        assert post(site, CORDON, token=site["admin"], headers=forwarded).status_code == 200
    with dashboard(tmp_path, allowed_hosts=("orch.example.com",)) as site:  # no trusted proxy: forged headers
        before = snapshot(site)
        assert_refused(post(site, CORDON, token=site["admin"], headers=forwarded), 403)
        assert snapshot(site) == before
        assert_still_answering(site)


def test_oversized_bodies_are_refused_before_they_are_read(site):
    before = snapshot(site)
    big = b'{"reason": "' + b"x" * (1 << 20) + b'"}'
    assert_refused(post(site, CORDON, body=big, token=site["admin"]), 413)  # declared length
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    assert_refused(post(site, CORDON, body=chunks, token=site["admin"]), 413)  # chunked, no length
    # a declared 300 MiB without a token: refused from the headers, before one body byte is sent
    head = (
        f"POST {CORDON} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {300 << 20}\r\n\r\n"
    ).encode()
    answer = raw_request(site, head)
    assert status_of(answer) == 401 and json_of(answer)["error"] == "unauthorized"
    bad_length = (
        f"POST {CORDON} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {site['admin']}\r\nContent-Length: {300 << 20}\r\n\r\n"
    ).encode()
    assert status_of(raw_request(site, bad_length)) == 413
    assert snapshot(site) == before
    assert_still_answering(site)


def test_malformed_and_hostile_json_is_refused_in_the_one_shape(site):
    before = snapshot(site)
    admin = site["admin"]
    for body in (
        b"{",
        b"not json",
        b'{"reason": 5}',
        b'{"reason": "' + b"x" * 300 + b'"}',
        b"[" * 30000,
        b'{"notice": 1e999}',
        b'{"notice": NaN}',
        b'{"notice": -1}',
        b"\xff\xfe",
    ):
        for path in (CORDON, "/api/nodes/local-spare-0000/preempt"):
            response = post(site, path, body=body, token=admin)
            assert response.status_code in (400, 422, 501), (body[:20], response.status_code, response.text[:200])
            if response.status_code != 501:
                assert "x" * 250 not in assert_refused(response, response.status_code)["detail"]  # not echoed
    assert snapshot(site) == before
    assert_still_answering(site)


def test_header_injection_and_path_traversal_get_nowhere(site):
    before = snapshot(site)
    response = get(site, "/api/jobs/x%0d%0aSet-Cookie:%20pwned=1")
    assert_refused(response, 404)
    assert "set-cookie" not in response.headers and "pwned" not in str(response.headers)
    for path in (
        "/static/..%2fapp.py",
        "/static/%2e%2e%2fsecurity.py",
        "/static/../../etc/passwd",
        "/api/jobs/..%2f..%2fetc%2fpasswd",
        "/api/cost/..%2fstate.db",
        f"/api/jobs/{site['job']}/checkpoints/..%2f..%2fstate.db/verify",
    ):
        response = get(site, path)
        assert response.status_code in (404, 405, 422), (path, response.status_code)
        assert "root:" not in response.text and "import" not in response.text
    for node in ("..%2f..%2fetc", "local-spare-0000%0d%0aX-Injected:%201"):
        assert post(site, f"/api/nodes/{node}/cordon", token=site["admin"]).status_code == 404
    reason = post(site, CORDON, body=json.dumps({"reason": "a\r\nX-Injected: 1"}).encode(), token=site["admin"])
    assert reason.status_code == 200 and "x-injected" not in reason.headers  # stored as text, never a header
    assert post(site, "/api/nodes/local-spare-0000/uncordon", token=site["admin"]).status_code == 200
    assert snapshot(site)[1:3] == before[1:3]
    assert_still_answering(site)


def test_a_slow_body_is_cut_off(tmp_path):
    with dashboard(tmp_path, body_timeout_s=1.0) as site:
        before = snapshot(site)
        head = (
            f"POST {CORDON} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {site['admin']}\r\nContent-Length: 40\r\n\r\n"
        ).encode()
        started = time.monotonic()
        answer = raw_request(site, head, [b"{"] + [b" "] * 8, pause_s=0.3)
        assert status_of(answer) == 408 and json_of(answer)["error"] == "request_timeout"
        assert time.monotonic() - started < 10
        assert snapshot(site) == before
        assert_still_answering(site)


def test_unknown_routes_and_methods_answer_in_the_one_shape(site):
    assert_refused(get(site, "/api/nope"), 404)
    assert_refused(
        httpx.delete(
            site["base"] + "/api/jobs",
            headers={"Authorization": f"Bearer {site['admin']}", "Content-Type": "application/json"},
        ),
        405,
    )
    assert_refused(get(site, "/api/jobs/%25"), 404)  # a LIKE wildcard matches nothing
    assert_refused(get(site, "/api/jobs/_"), 404)
    assert_refused(get(site, "/api/events?after=-5"), 422)


def test_verify_is_an_authenticated_rate_limited_task_with_progress(site):
    job, admin = site["job"], site["admin"]
    path = f"/api/jobs/{job}/checkpoints/10/verify"
    before = snapshot(site)
    assert_refused(post(site, path), 401)
    assert_refused(get(site, path), 405)  # reading no longer starts a scan of every shard
    assert_refused(post(site, path, token=READER), 403)
    assert snapshot(site) == before
    started = post(site, path, token=admin)
    assert started.status_code in (200, 202), started.text
    task = started.json()
    assert task["shards"] == 2 and task["bytes_total"] == 2 * 3 * 1024 * 1024
    deadline = time.time() + 30
    while task["state"] == "running" and time.time() < deadline:
        time.sleep(0.1)
        task = get(site, f"/api/tasks/{task['id']}").json()
    assert task["state"] == "done" and task["verified"] and task["shards_done"] == 2
    assert task["bytes_done"] == task["bytes_total"] and task["actor"].startswith("dashboard:admin@")
    assert_refused(get(site, "/api/tasks/verify-99999"), 404)
    assert_still_answering(site)


def test_verify_reports_a_corrupt_shard_and_refuses_past_its_slots(tmp_path):
    with dashboard(tmp_path, verify_slots=1) as site:
        shard = next(p for p in site["home"].rglob("rank_00001.*") if p.suffix != ".json")
        shard.write_bytes(b"\x00" * shard.stat().st_size)  # same size, wrong bytes
        path = f"/api/jobs/{site['job']}/checkpoints/10/verify"
        board = site["ctx"].tasks
        board.slots = 0  # every slot taken: the next request is refused, not queued
        refused = post(site, path, token=site["admin"])
        assert_refused(refused, 429)
        assert refused.headers["retry-after"] == "10"
        board.slots = 1
        task = post(site, path, token=site["admin"]).json()
        while task["state"] == "running":
            time.sleep(0.1)
            task = get(site, task["progress"]).json()
        assert task["state"] == "done" and not task["verified"]
        problems = task["problems"]
        assert len(problems) == 1 and "rank_00001" in problems[0] and "is corrupt" in problems[0]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_can_read_is_refused(tmp_path, mode):
    with dashboard(tmp_path) as site:
        before = snapshot(site)
        (site["home"] / "dashboard-tokens").chmod(mode)
        body = assert_refused(post(site, CORDON, token=site["admin"]), 503)
        assert "chmod 600" in body["detail"]
        assert snapshot(site)[:3] == before[:3]
        (site["home"] / "dashboard-tokens").chmod(0o600)
        assert_still_answering(site)


@pytest.mark.slow
def test_a_300_mib_body_without_a_token_does_not_grow_the_server(tmp_path):
    """The served CLI (`orch dashboard`) in its own process: its resident memory before and after being
    sent 300 MiB bodies (declared and chunked, without a token, and chunked with one) stays put."""
    import os
    import socket
    import subprocess
    import sys

    import psutil

    from tests.helpers.dashboard_server import free_port

    port = free_port()
    env = {**os.environ, "ORCH_HOME": str(tmp_path)}
    env.pop("ORCH_STATE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "dashboard", "--no-cluster", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        site = {"base": f"http://127.0.0.1:{port}", "port": port}
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(site["base"] + "/healthz", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and server.poll() is None, server.stdout.read()
            time.sleep(0.2)
        admin = next(
            line.split()[1]
            for line in (tmp_path / "dashboard-tokens").read_text().splitlines()
            if line.startswith("admin ")
        )
        proc = psutil.Process(server.pid)
        httpx.get(site["base"] + "/api/jobs", timeout=10)
        before = proc.memory_info().rss
        mib = b"x" * (1 << 20)
        common = f"POST {CORDON} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        answers = [
            raw_request(site, (common + f"Content-Length: {300 << 20}\r\n\r\n").encode(), [mib] * 300),
            raw_request(
                site, (common + "Transfer-Encoding: chunked\r\n\r\n").encode(), [b"100000\r\n" + mib + b"\r\n"] * 300
            ),
            raw_request(
                site,
                (common + f"Authorization: Bearer {admin}\r\nTransfer-Encoding: chunked\r\n\r\n").encode(),
                [b"100000\r\n" + mib + b"\r\n"] * 300,
            ),
        ]
        assert [status_of(a) for a in answers] == [401, 401, 413]
        grown = proc.memory_info().rss - before
        assert grown < 40 << 20, f"the server grew by {grown / 2**20:.0f} MiB"
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        assert httpx.get(site["base"] + "/healthz", timeout=10).text == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_bad_public_url_is_refused_at_start(tmp_path):
    import os
    import subprocess
    import sys

    for url in ("javascript:alert(1)", "https://user:pw@orch.example.com", "https://orch.example.com/path?x=1"):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator", "dashboard", "--no-cluster", "--public-url", url],
            capture_output=True,
            text=True,
            env={**os.environ, "ORCH_HOME": str(tmp_path)},
            timeout=60,
        )
        assert out.returncode == 2 and "--public-url" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_orch_dashboard_beyond_loopback_requires_a_token_for_reads(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers.dashboard_server import free_port, wait_until_serving

    port = free_port()
    env = {**os.environ, "ORCH_HOME": str(tmp_path)}
    env.pop("ORCH_STATE_URL", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "dashboard",
            "--no-cluster",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--allow-host",
            "orch.internal",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server)
        admin = next(
            line.split()[1]
            for line in (tmp_path / "dashboard-tokens").read_text().splitlines()
            if line.startswith("admin ")
        )
        assert_refused(httpx.get(base + "/api/jobs", timeout=10), 401)
        assert httpx.get(base + "/api/jobs", headers={"Authorization": f"Bearer {admin}"}, timeout=10).json() == []
        ok = httpx.get(base + "/api/jobs", headers={"Host": "orch.internal", "Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200
        assert_refused(
            httpx.get(base + "/api/jobs", headers={"Host": "evil.example", "Authorization": f"Bearer {admin}"}), 421
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_verification_streams_shards_in_constant_memory(tmp_path):
    """A 64 MiB shard is verified with a peak of Python allocations far below its size (8 MiB pieces);
    reading it whole, as verification used to, peaks above 64 MiB."""
    import tracemalloc

    from orchestrator.checkpoint.objects import FileObjectStore
    from orchestrator.checkpoint.store import CheckpointStore

    store = CheckpointStore(FileObjectStore(tmp_path / "ck"), "job")
    size = 64 << 20
    store.put_shard(5, 0, b"\x07" * size)
    store.commit(5, 1, {"world_size": 1}, 1.0, {})
    manifest = store.manifest(5)
    tracemalloc.start()
    try:
        assert store.verify(5) == []
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        store.read_shard(manifest, 0)
        whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert streamed < 20 << 20 and whole >= size, (streamed, whole)
