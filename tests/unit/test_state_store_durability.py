"""The state store on SQLite and on a real PostgreSQL server (started by the ``postgres`` fixture):
migrations, concurrent writers with compare-and-set, a server restarted mid-run, statement
timeouts, and credentials that never reach a message."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import create_engine, inspect, text

from orchestrator.clock import ManualClock
from orchestrator.ledger.intervals import Interval
from orchestrator.lifecycle import JobState
from orchestrator.state import tables
from orchestrator.state.engine import StateStoreTimeout, StateStoreUnavailable, redact
from orchestrator.state.store import MIGRATIONS, StaleState, StateStore, migrate
from tests.helpers.job_rows import bare_job_row
from tests.pgserver import PASSWORD

S = JobState


def _alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_migrations_from_empty_and_from_the_previous_revision(state_url):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    head = ScriptDirectory.from_config(config).get_revision("head")
    previous = head.down_revision
    engine = create_engine(state_url)
    with engine.begin() as conn:  # the schema as the previous release left it, with a job in it
        config.attributes["connection"] = conn
        command.upgrade(config, previous)
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, team, priority, state, spec, source, world_size, nodes, "
                "devices_per_node, total_steps, submitted_at, updated_at, step, tokens, attempt, restarts, "
                "cancel_requested, preempt_requested) VALUES ('old-1', 'old', 'research', 0, 'queued', "
                "'{}', '{}', 2, 1, 2, 10, 1.0, 1.0, 0, 0, 0, 0, false, false)"
            )
        )
    store = StateStore(state_url)  # migrates on open
    assert store.get_job("old-1")["state"] == "queued"
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head.revision
        diffs = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    assert [d for d in diffs if d[0] not in ("modify_nullable",)] == []  # the tables and the migrations agree
    migrate(store.engine)  # a second open is a no-op
    fresh_url = state_url.replace("state.db", "fresh.db") if state_url.startswith("sqlite") else None
    if fresh_url:  # from empty, straight to head
        assert {"jobs", "ledger_intervals"} <= set(inspect(StateStore(fresh_url).engine).get_table_names())


def _race(url: str, job_id: str, barrier: threading.Barrier, outcomes: list) -> None:
    store = StateStore(url)
    barrier.wait()
    try:
        store.transition(
            job_id,
            S.QUEUED,
            S.PLACING,
            f"placed by {threading.current_thread().name}",
            updates={"assignment": [threading.current_thread().name]},
        )
        outcomes.append("won")
    except StaleState:
        outcomes.append("stale")


def test_concurrent_writers_compare_and_set_one_wins(state_url):
    """Controller, CLI, dashboard and a second controller all move the same job at once: exactly
    one move lands, the others see StaleState, and the history has one placement."""
    store = StateStore(state_url)
    for i in range(5):
        store.insert_job(bare_job_row(f"race-{i}"))
    for i in range(5):
        barrier, outcomes = threading.Barrier(4), []
        threads = [
            threading.Thread(target=_race, args=(state_url, f"race-{i}", barrier, outcomes), name=f"w{n}")
            for n in range(4)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert sorted(outcomes) == ["stale", "stale", "stale", "won"]
        history = store.transitions(f"race-{i}")
        assert [h["to_state"] for h in history] == ["queued", "placing"]
        assert store.get_job(f"race-{i}")["assignment"] == [history[1]["reason"].split()[-1]]


def _run_jobs(store: StateStore, count: int, done: list, errors: list) -> None:
    try:
        for i in range(count):
            job = f"run-{i}"
            store.insert_job(bare_job_row(job))
            store.transition(job, S.QUEUED, S.PLACING, "placed")
            store.transition(job, S.PLACING, S.RUNNING, "running")
            rows = [
                Interval(job, 1, "n1", "local", "on-demand", 2, "cpu", "pre_training", "productive", 0.0, 3600.0, 2.0)
            ]
            store.transition(
                job,
                S.RUNNING,
                S.SUCCEEDED,
                "done",
                extra=lambda conn, now, rows=rows: store.insert_intervals(conn, "research", rows),
            )
            done.append(job)
    except Exception as exc:  # reported by the test
        errors.append(repr(exc))


@pytest.mark.slow
def test_a_postgres_restart_mid_run_loses_and_doubles_nothing(postgres, monkeypatch):
    """The server crashes twice (immediate stop: every connection dropped) while a writer moves 60
    jobs through their lives: each call is retried until the server is back, and every job ends
    with exactly its four transitions and one ledger hour-pair, none lost or applied twice."""
    monkeypatch.setenv("ORCH_STATE_RETRY_S", "60")
    url = postgres.new_database()
    store = StateStore(url)
    done, errors = [], []
    writer = threading.Thread(target=_run_jobs, args=(store, 60, done, errors))
    writer.start()
    for _ in range(2):
        while len(done) < 10 + 20 * _ and writer.is_alive():
            time.sleep(0.01)
        postgres.restart(down_s=1.0)
    writer.join(timeout=120)
    assert errors == [] and len(done) == 60
    for job in done:
        assert [h["to_state"] for h in store.transitions(job)] == ["queued", "placing", "running", "succeeded"]
    hours = sum(i.device_hours for i in store.intervals())
    assert store.count("ledger_intervals") == 60 and hours == pytest.approx(120.0)


def test_a_statement_blocked_by_a_lock_times_out_with_a_clear_error(postgres, monkeypatch):
    monkeypatch.setenv("ORCH_STATE_STATEMENT_TIMEOUT_MS", "400")
    url = postgres.new_database()
    store = StateStore(url)
    store.insert_job(bare_job_row("locked"))
    blocker = create_engine(url).connect()
    blocker.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))  # held until rollback
    try:
        started = time.monotonic()
        with pytest.raises(StateStoreTimeout) as err:
            store.transition("locked", S.QUEUED, S.PLACING, "placed")
        assert time.monotonic() - started < 10
    finally:
        blocker.rollback()
        blocker.close()
    assert "timed out after 400 ms" in str(err.value) and PASSWORD not in str(err.value)
    store.transition("locked", S.QUEUED, S.PLACING, "placed")  # nothing half-written by the timed-out try
    assert [h["to_state"] for h in store.transitions("locked")] == ["queued", "placing"]


def test_credentials_are_never_printed(postgres, tmp_path):
    assert redact(postgres.url()) == postgres.url().replace(PASSWORD, "***")
    env = {**os.environ, "ORCH_HOME": str(tmp_path), "ORCH_STATE_RETRY_S": "1"}
    down = postgres.url().replace(str(postgres.port), "1")  # nothing listens on port 1
    wrong = postgres.url().replace(PASSWORD, "not-the-" + PASSWORD)
    for url in (down, wrong):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator", "list"],
            capture_output=True,
            text=True,
            env={**env, "ORCH_STATE_URL": url},
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and "state store" in out.stderr and "***" in out.stderr
        assert PASSWORD not in out.stderr + out.stdout


def test_the_store_gives_up_with_a_typed_error_when_the_server_stays_down(postgres, monkeypatch):
    monkeypatch.setenv("ORCH_STATE_RETRY_S", "0.5")
    with pytest.raises(StateStoreUnavailable) as err:
        StateStore(postgres.url().replace(str(postgres.port), "1"))
    assert "gave up after" in str(err.value) and PASSWORD not in str(err.value)


def test_manual_clock_transitions_retry_idempotently(state_url):
    """A retried transition whose first try committed recognises its own row (same time, reason):
    simulated here by running the same move twice with a frozen clock."""
    store = StateStore(state_url, clock=ManualClock(50.0))
    store.insert_job(bare_job_row("again"))
    store.transition("again", S.QUEUED, S.PLACING, "placed")
    store.transition("again", S.QUEUED, S.PLACING, "placed")  # same call, same instant: already applied
    assert [h["to_state"] for h in store.transitions("again")] == ["queued", "placing"]
    store.clock.advance(1.0)
    with pytest.raises(StaleState):  # a later, different move from a stale view is refused
        store.transition("again", S.QUEUED, S.PLACING, "placed")
