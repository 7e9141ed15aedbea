"""`orch state backup|restore`: a round trip SQLite -> PostgreSQL -> SQLite keeps every row, a
backup of the previous schema revision restores and is migrated, and bad input is refused with
nothing written."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from orchestrator.clock import ManualClock
from orchestrator.ledger.intervals import Interval
from orchestrator.lifecycle import JobState
from orchestrator.state.lease import Lease
from orchestrator.state.store import StateStore
from tests.helpers.job_rows import bare_job_row
from tests.pgserver import PASSWORD
from tests.unit.test_state_store_durability import _alembic_config

S = JobState


def orch(*args: str, home) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORCH_HOME": str(home)},
    )


def populate(url: str) -> StateStore:
    store = StateStore(url, clock=ManualClock(1000.25))
    for i in range(3):
        store.insert_job(bare_job_row(f"job-{i}"))
    store.transition("job-0", S.QUEUED, S.PLACING, "placed", updates={"assignment": ["n1"]})
    store.transition(
        "job-0",
        S.PLACING,
        S.FAILED,
        "lost",
        extra=lambda conn, now: store.insert_intervals(
            conn,
            "research",
            [Interval("job-0", 1, "n1", "local", "on-demand", 2, "cpu", "pre_training", "lost", 1.5, 7.125, 2.5)],
        ),
    )
    store.add_metrics("job-1", 1, [{"step": 1, "loss": 3.25, "tokens": 10.0}])
    store.set_team("research", quota_devices=8, budget_gpu_hours=12.5)
    store.set_cordon("n2", True, "flaky", "user:test")
    Lease(store, holder="ctl-a").acquire()
    return store


def rows_of(path) -> list:
    with gzip.open(path, "rt") as handle:
        handle.readline()
        return sorted(handle.readlines())


def test_a_backup_round_trips_between_sqlite_and_postgresql(postgres, tmp_path):
    sqlite_url, pg_url = f"sqlite:///{tmp_path / 'a.db'}", postgres.new_database()
    populate(sqlite_url)
    first, second, third = tmp_path / "1.jsonl.gz", tmp_path / "2.jsonl.gz", tmp_path / "3.jsonl.gz"
    out = orch("state", "backup", str(first), "--url", sqlite_url, home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "3 jobs" in out.stdout
    out = orch("state", "restore", str(first), "--url", pg_url, home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr and "***" in out.stdout
    assert orch("state", "backup", str(second), "--url", pg_url, home=tmp_path).returncode == 0
    assert rows_of(second) == rows_of(first)  # every row of every table, exactly
    restored = StateStore(pg_url)
    assert restored.get_job("job-0")["assignment"] == ["n1"] and restored.cordoned_nodes() == {"n2": "flaky"}
    restored.add_event("after", "ids continue past the restored ones")  # the sequences were moved on
    assert restored.events()[-1]["id"] > max(e["id"] for e in restored.events()[:-1])
    back = f"sqlite:///{tmp_path / 'b.db'}"
    assert orch("state", "restore", str(second), "--url", back, home=tmp_path).returncode == 0
    assert orch("state", "backup", str(third), "--url", back, home=tmp_path).returncode == 0
    assert rows_of(third) == rows_of(first)


def test_a_backup_of_the_previous_schema_restores_and_is_migrated(state_url, tmp_path):
    from alembic import command
    from alembic.script import ScriptDirectory

    from orchestrator.state.backup import backup, restore

    config = _alembic_config()
    previous = ScriptDirectory.from_config(config).get_revision("head").down_revision
    old = f"sqlite:///{tmp_path / 'old.db'}"
    with create_engine(old).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, previous)
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, team, priority, state, spec, source, world_size, nodes, "
                "devices_per_node, total_steps, submitted_at, updated_at, step, tokens, attempt, restarts, "
                "cancel_requested, preempt_requested) VALUES ('old-1', 'old', 'research', 0, 'queued', "
                "'{}', '{}', 2, 1, 2, 10, 1.0, 1.0, 0, 0, 0, 0, 0, 0)"
            )
        )
    header = backup(old, tmp_path / "old.jsonl.gz")
    assert header["revision"] == previous
    restore(state_url, tmp_path / "old.jsonl.gz")
    store = StateStore(state_url)
    assert store.get_job("old-1")["name"] == "old"
    store.transition("old-1", S.QUEUED, S.CANCELLED, "works on the newest schema")


def test_restore_refuses_a_store_with_jobs_and_files_that_are_not_backups(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    populate(url)
    good = tmp_path / "good.jsonl.gz"
    assert orch("state", "backup", str(good), "--url", url, home=tmp_path).returncode == 0
    out = orch("state", "restore", str(good), "--url", url, home=tmp_path)
    assert out.returncode == 2 and "already holds 3 jobs" in out.stderr and "--force" in out.stderr
    not_a_backup = tmp_path / "x.jsonl.gz"
    with gzip.open(not_a_backup, "wt") as handle:
        handle.write(json.dumps({"format": "something-else"}) + "\n")
    truncated = tmp_path / "t.jsonl.gz"
    with gzip.open(good, "rt") as src, gzip.open(truncated, "wt") as dst:
        dst.writelines(src.readlines()[:-3])
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for bad, message in (
        (not_a_backup, "is not an orch state backup"),
        (truncated, "truncated or corrupt"),
        (tmp_path / "missing.gz", "does not exist"),
    ):
        out = orch("state", "restore", str(bad), "--url", empty, home=tmp_path)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "empty.db").exists() or StateStore(empty).count("jobs") == 0  # nothing half-written
    out = orch("state", "restore", str(good), "--url", url, "--force", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert StateStore(url).count("jobs") == 3


@pytest.mark.parametrize("args", [["--help"], ["backup", "--help"]])
def test_state_help_lists_backup_and_restore(args, tmp_path):
    out = orch("state", *args, home=tmp_path)
    assert out.returncode == 0 and "backup" in out.stdout
