"""The state store: every durable fact of the control plane goes through here.

SQLite under ``ORCH_HOME`` by default (WAL, so the CLI reads while the controller and job runners
write), PostgreSQL by URL (``ORCH_STATE_URL``). The schema is migrated by Alembic on open.
A job's state change, its transition row, its events and (later) its ledger intervals are written
in one transaction, with a compare-and-set on the state the caller saw, so a controller killed at
any point leaves either all of a change or none of it.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from orchestrator.clock import Clock, SystemClock
from orchestrator.control.states import JobState, check_transition
from orchestrator.errors import OrchError
from orchestrator.state import tables as t

MIGRATIONS = Path(__file__).parent / "migrations"


class JobNotFound(OrchError):
    pass


class StaleState(RuntimeError):
    """The job was not in the state the caller expected: someone else moved it first."""


def orch_home() -> Path:
    return Path(os.environ.get("ORCH_HOME", Path.home() / ".orch")).expanduser()


def default_state_url() -> str:
    return os.environ.get("ORCH_STATE_URL") or f"sqlite:///{orch_home() / 'state.db'}"


@dataclass(frozen=True)
class EventRecord:
    kind: str
    message: str
    data: dict | None = None
    actor: str = "orch"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations across processes.

    The CLI, the controller actor and every job runner open the store, often at the same moment on
    a fresh ``ORCH_HOME``; two of them creating ``alembic_version`` at once makes one fail. SQLite
    takes an exclusive lock on a file beside the database; PostgreSQL an advisory lock.
    """
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with open(f"{engine.url.database}.migrate.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
    else:
        yield


_PG_MIGRATION_LOCK = 0x6F726368  # "orch"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op read when it already is)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    from alembic import command

    with _migration_lock(engine):
        with engine.begin() as conn:
            # Another process may have migrated while this one waited for the lock.
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


@functools.lru_cache(maxsize=64)
def _loads_large(text: str) -> Any:
    return json.loads(text)


def _loads_caching_specs(text: str) -> Any:
    """JSON decoding that parses each large document (a job's spec) once. The parsed object is shared
    between reads, so it is only for stores whose readers do not mutate what they read (the
    simulator's, which reads the same spec tens of thousands of times)."""
    return _loads_large(text) if len(text) > 2048 else json.loads(text)


class StateStore:
    def __init__(self, url: str | None = None, clock: Clock | None = None, share_decoded_specs: bool = False):
        self.url = url or default_state_url()
        self.clock = clock or SystemClock()
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if self.url == "sqlite://":  # in memory (the simulator): one connection shared by all
            from sqlalchemy.pool import StaticPool

            self.engine = create_engine(self.url, poolclass=StaticPool, connect_args={"check_same_thread": False},
                                        **({"json_deserializer": _loads_caching_specs} if share_decoded_specs else {}))
        else:
            self.engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrate(self.engine)

    # ------------------------------------------------------------------ jobs

    def new_job_id(self, name: str) -> str:
        return f"{name}-{secrets.token_hex(3)}"

    def insert_job(self, row: dict, events: Iterable[EventRecord] = ()) -> str:
        now = self.clock.now()
        values = {"state": JobState.QUEUED.value, "submitted_at": now, "updated_at": now, "step": 0,
                  "tokens": 0.0, "attempt": 0, "restarts": 0, "cancel_requested": False,
                  "preempt_requested": False, **row}
        with self.engine.begin() as conn:
            conn.execute(insert(t.jobs).values(**values))
            conn.execute(insert(t.transitions).values(job_id=values["id"], from_state=None,
                                                      to_state=values["state"], reason="submitted", at=now))
            self._insert_events(conn, values["id"], events, now)
        return values["id"]

    def get_job(self, job_id: str) -> dict:
        """A job by id or unique id prefix."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).mappings().first()
            if row is None:
                rows = conn.execute(select(t.jobs).where(t.jobs.c.id.startswith(job_id))).mappings().all()
                if len(rows) == 1:
                    row = rows[0]
                elif len(rows) > 1:
                    raise JobNotFound(f"'{job_id}' matches {len(rows)} jobs: "
                                      f"{', '.join(r['id'] for r in rows[:5])}; give more of the id")
        if row is None:
            raise JobNotFound(f"no job '{job_id}'; see 'orch list'")
        return dict(row)

    def job_state(self, job_id: str) -> JobState:
        """Just the state (no JSON columns decoded): for loops that poll it."""
        with self.engine.connect() as conn:
            value = conn.execute(select(t.jobs.c.state).where(t.jobs.c.id == job_id)).scalar()
        if value is None:
            raise JobNotFound(f"no job '{job_id}'; see 'orch list'")
        return JobState(value)

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[dict]:
        query = select(t.jobs).order_by(t.jobs.c.submitted_at)
        if states is not None:
            query = query.where(t.jobs.c.state.in_([s.value for s in states]))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def transition(self, job_id: str, expect: JobState, to: JobState, reason: str, *,
                   updates: dict | None = None, events: Iterable[EventRecord] = (),
                   extra: Callable[[Connection, float], None] | None = None) -> None:
        """Move a job ``expect -> to`` atomically with its transition row, events and any extra
        writes (ledger intervals); raise ``StaleState`` if the job was no longer in ``expect``."""
        check_transition(expect, to)
        now = self.clock.now()
        values = {"state": to.value, "updated_at": now, **(updates or {})}
        if to.is_terminal:
            values.setdefault("ended_at", now)
        with self.engine.begin() as conn:
            result = conn.execute(update(t.jobs).where(t.jobs.c.id == job_id, t.jobs.c.state == expect.value)
                                  .values(**values))
            if result.rowcount != 1:
                raise StaleState(f"job {job_id} is no longer {expect.value}")
            conn.execute(insert(t.transitions).values(job_id=job_id, from_state=expect.value, to_state=to.value,
                                                      reason=reason, at=now))
            self._insert_events(conn, job_id, events, now)
            if extra is not None:
                extra(conn, now)

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = self.clock.now()
        with self.engine.begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**fields))

    def transitions(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.transitions).where(t.transitions.c.job_id == job_id)
                                .order_by(t.transitions.c.id)).mappings()
            return [dict(r) for r in rows]

    def last_transition_at(self, job_id: str, to_state: JobState) -> float | None:
        """When the job last entered ``to_state`` (the ledger asks for its latest placement)."""
        query = (select(t.transitions.c.at).where(t.transitions.c.job_id == job_id,
                                                 t.transitions.c.to_state == to_state.value)
                 .order_by(t.transitions.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    # ------------------------------------------------------------------ events and metrics

    def _insert_events(self, conn: Connection, job_id: str | None, records: Iterable[EventRecord], now: float) -> None:
        rows = [{"job_id": job_id, "kind": e.kind, "message": e.message, "data": e.data, "actor": e.actor, "at": now}
                for e in records]
        if rows:
            conn.execute(insert(t.events), rows)

    def add_event(self, kind: str, message: str, job_id: str | None = None, data: dict | None = None,
                  actor: str = "orch") -> None:
        with self.engine.begin() as conn:
            self._insert_events(conn, job_id, [EventRecord(kind, message, data, actor)], self.clock.now())

    def events(self, job_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[dict]:
        query = select(t.events).where(t.events.c.id > after_id).order_by(t.events.c.id).limit(limit)
        if job_id is not None:
            query = query.where(t.events.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def add_metrics(self, job_id: str, attempt: int, rows: list[dict]) -> None:
        """Append step metrics and move the job's progress fields to the newest step."""
        if not rows:
            return
        now = self.clock.now()
        last = max(rows, key=lambda r: r["step"])
        with self.engine.begin() as conn:
            conn.execute(insert(t.metrics), [{"job_id": job_id, "attempt": attempt, "step": r["step"],
                                               "at": r.get("wall_time", now), "data": r} for r in rows])
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(
                step=last["step"], tokens=last.get("tokens", 0.0), loss=last.get("loss"),
                tokens_per_s=last.get("tokens_per_s"), updated_at=now))

    def metrics(self, job_id: str, after_step: int = -1) -> list[dict]:
        """Each step's newest metrics (a step re-run after a restart replaces the lost one)."""
        query = (select(t.metrics.c.step, t.metrics.c.data, t.metrics.c.attempt, t.metrics.c.at)
                 .where(t.metrics.c.job_id == job_id, t.metrics.c.step > after_step).order_by(t.metrics.c.id))
        with self.engine.connect() as conn:
            latest = {r.step: {**r.data, "attempt": r.attempt, "at": r.at} for r in conn.execute(query)}
        return [latest[s] for s in sorted(latest)]

    def metrics_of_attempt(self, job_id: str, attempt: int) -> list[dict]:
        query = (select(t.metrics.c.data, t.metrics.c.at).where(t.metrics.c.job_id == job_id,
                                                                t.metrics.c.attempt == attempt)
                 .order_by(t.metrics.c.id))
        with self.engine.connect() as conn:
            return [{**r.data, "attempt": attempt, "at": r.at} for r in conn.execute(query)]

    # ------------------------------------------------------------------ ledger

    @staticmethod
    def insert_intervals(conn: Connection, team: str, intervals: list) -> None:
        """Write ledger intervals on the caller's connection (inside its transaction)."""
        rows = [{**i.as_row(), "team": team} for i in intervals]
        if rows:
            conn.execute(insert(t.ledger_intervals), rows)

    def intervals(self, job_id: str | None = None) -> list:
        from orchestrator.ledger.intervals import Interval

        query = select(t.ledger_intervals).order_by(t.ledger_intervals.c.id)
        if job_id is not None:
            query = query.where(t.ledger_intervals.c.job_id == job_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        fields = Interval.__dataclass_fields__
        return [Interval(**{k: r[k] for k in fields}) for r in rows]

    def count(self, table_name: str) -> int:
        table = t.metadata.tables[table_name]
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()

    # ------------------------------------------------------------------ nodes and teams

    def cordoned_nodes(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.node_states).where(t.node_states.c.cordoned.is_(True))).mappings()
            return {r["name"]: r["reason"] or "" for r in rows}

    def set_cordon(self, name: str, cordoned: bool, reason: str, actor: str) -> None:
        now = self.clock.now()
        with self.engine.begin() as conn:
            exists = conn.execute(select(t.node_states.c.name).where(t.node_states.c.name == name)).first()
            if exists:
                conn.execute(update(t.node_states).where(t.node_states.c.name == name)
                             .values(cordoned=cordoned, reason=reason, updated_at=now))
            else:
                conn.execute(insert(t.node_states).values(name=name, cordoned=cordoned, reason=reason,
                                                          updated_at=now))
            kind = "node.cordon" if cordoned else "node.uncordon"
            self._insert_events(conn, None, [EventRecord(kind, f"{name}: {reason}", {"node": name}, actor)], now)

    def team_quotas(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.teams).where(t.teams.c.quota_devices.is_not(None))).mappings()
            return {r["name"]: r["quota_devices"] for r in rows}

    def teams(self) -> dict[str, dict]:
        with self.engine.connect() as conn:
            return {r["name"]: dict(r) for r in conn.execute(select(t.teams)).mappings()}

    def set_team(self, name: str, **fields: Any) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(t.teams.c.name).where(t.teams.c.name == name)).first():
                conn.execute(update(t.teams).where(t.teams.c.name == name).values(**fields))
            else:
                conn.execute(insert(t.teams).values(name=name, **fields))
