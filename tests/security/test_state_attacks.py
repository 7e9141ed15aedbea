"""Local state against other users of the machine and against careless input: ORCH_HOME 0700, the
database and logs 0600, job ids taken literally (never as LIKE patterns), ledger reports read from one
snapshot, and long job ids that never collide as Kubernetes names."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from orchestrator.k8s.render import MAX_RAYJOB_NAME, dns_name
from orchestrator.ledger import report
from orchestrator.ledger.intervals import Interval
from orchestrator.private import open_private, private_dir, private_file
from orchestrator.state.store import JobNotFound, StateStore
from tests.security.conftest import build_state


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def cli(home, *args):
    env = {**os.environ, "ORCH_HOME": str(home)}
    env.pop("ORCH_STATE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_fresh_orch_home_is_private(tmp_path):
    home = tmp_path / "home"
    out = cli(home, "list")
    assert out.returncode == 0, out.stderr
    assert mode(home) == 0o700 and mode(home / "state.db") == 0o600
    for extra in ("state.db-wal", "state.db-shm"):
        if (home / extra).exists():
            assert mode(home / extra) == 0o600


def test_an_open_orch_home_left_by_an_older_version_is_narrowed(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "state.db").touch()
    (home / "state.db").chmod(0o644)
    assert cli(home, "list").returncode == 0
    assert mode(home) == 0o700 and mode(home / "state.db") == 0o600


def test_private_files_and_logs_are_created_closed(tmp_path):
    folder = private_dir(tmp_path / "jobs" / "j1")
    assert mode(folder) == 0o700
    with open_private(folder / "job.log", "a") as log:
        log.write("line\n")
    assert mode(folder / "job.log") == 0o600
    loose = tmp_path / "loose"
    loose.write_text("x")
    loose.chmod(0o666)
    assert mode(private_file(loose)) == 0o600 and loose.read_text() == "x"  # narrowed, not truncated


@pytest.fixture
def two_jobs(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    (tmp_path / "template").mkdir()
    base = {
        k: v
        for k, v in build_state(tmp_path / "template")[0].list_jobs()[0].items()
        if k in ("name", "team", "priority", "spec", "source", "world_size", "nodes", "devices_per_node", "total_steps")
    }
    for job_id in ("abc-1", "abd-2"):
        store.insert_job({**base, "id": job_id})
    return store


def test_job_ids_are_matched_exactly_or_by_unambiguous_prefix_never_as_patterns(two_jobs, tmp_path):
    store = two_jobs
    assert store.get_job("abc")["id"] == "abc-1" and store.get_job("abd-2")["id"] == "abd-2"
    with pytest.raises(JobNotFound, match="matches"):
        store.get_job("ab")  # ambiguous: refused, naming the candidates
    for pattern in ("%", "_", "ab%", "a_c", "%-1", "\\", "abc-1%"):
        with pytest.raises(JobNotFound):
            store.get_job(pattern)
    jobs_before = [(j["id"], j["state"], j["cancel_requested"]) for j in store.list_jobs()]
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "cancel", "%"],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(tmp_path), "ORCH_STATE_URL": store.url},
        timeout=120,
    )
    assert out.returncode == 2 and "no job '%'" in out.stderr and "Traceback" not in out.stderr
    assert [(j["id"], j["state"], j["cancel_requested"]) for j in store.list_jobs()] == jobs_before


def _closed_hour(job_id: str) -> Interval:
    return Interval(job_id, 1, "n1", "p", "on-demand", 8, "H800", "train", "productive", 0.0, 3600.0, 2.0)


def test_reads_through_a_snapshot_see_one_instant(two_jobs):
    store, other = two_jobs, StateStore(two_jobs.url)
    with store.snapshot() as view:
        assert [j["id"] for j in view.list_jobs()] == ["abc-1", "abd-2"]
        with other.engine.begin() as conn:  # another process commits meanwhile
            other.insert_intervals(conn, "default", [_closed_hour("abd-2")])
        assert view.intervals("abd-2") == []  # not in this snapshot
        with pytest.raises(RuntimeError, match="for reading"):
            view.engine.begin()
    assert len(store.intervals("abd-2")) == 1  # visible once the snapshot ends


def test_a_cost_report_is_one_snapshot_even_while_the_ledger_is_written(two_jobs, monkeypatch):
    """The report reads job abc-1, then a controller commits abd-2's closed hour, then the report reads
    abd-2: the report must describe one instant (abd-2 without the hour), not a mix of two."""
    store, other = two_jobs, StateStore(two_jobs.url)
    real, calls = report.job_cost, []

    def job_cost_with_a_concurrent_write(view, job, now=None):
        if not calls:
            with other.engine.begin() as conn:
                other.insert_intervals(conn, "default", [_closed_hour("abd-2")])
        calls.append(job.id)
        return real(view, job, now)

    monkeypatch.setattr(report, "job_cost", job_cost_with_a_concurrent_write)
    during = report.cost_report(store, now=10_000.0)
    monkeypatch.setattr(report, "job_cost", real)
    after = report.cost_report(store, now=10_000.0)
    assert calls == ["abc-1", "abd-2"]
    assert during["gpu_hours"]["productive"] == pytest.approx(0.0)
    assert after["gpu_hours"]["productive"] == pytest.approx(8.0)


def test_long_job_ids_become_distinct_valid_kubernetes_names():
    import re

    base = "a" * 63
    ids = [f"{base}-{suffix}" for suffix in ("0a1b2c", "0a1b2d", "ffffff")] + [
        "Mixed_Case.id-1",
        "mixed-case-id-1",
        "7-starts-with-a-digit",
        "x" * 300,
    ]
    names = [dns_name(i) for i in ids]
    assert len(set(names)) == len(names)  # the truncated ids used to collide
    for name in names:
        assert len(name) <= MAX_RAYJOB_NAME and re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", name), name
    assert dns_name("deepseek-v3-pretrain-0001") == "deepseek-v3-pretrain-0001"  # a good name is kept
    assert dns_name(ids[0]) == dns_name(ids[0])  # stable: the controller finds the RayJob again
