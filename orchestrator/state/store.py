"""The state store: every durable fact of the control plane goes through here.

SQLite under ``ORCH_HOME`` by default (WAL, so the CLI reads while the controller and job runners
write), PostgreSQL by URL (``ORCH_STATE_URL``). The schema is migrated by Alembic on open.
A job's state change, its transition row, its events and (later) its ledger intervals are written
in one transaction, with a compare-and-set on the state the caller saw, so a controller killed at
any point leaves either all of a change or none of it.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import json
import secrets
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import OrchError
from orchestrator.lifecycle import HOLDING, JobState, Owner, check_transition
from orchestrator.paths import default_state_url, orch_home
from orchestrator.private import private_dir, private_file
from orchestrator.spec.loader import validate_mapping
from orchestrator.spec.schema import JobSpec
from orchestrator.state import tables as t
from orchestrator.state.engine import call_with_retry, make_engine, own_retries, retry_public_methods
from orchestrator.state.records import Interval, JobRecord, RunnerOutcome

MIGRATIONS = Path(__file__).parent / "migrations"
GANG_EVENT = "job.gang"  # a RayJob's driver recorded its attempt's gang (``record_gang``)


class JobNotFound(OrchError):
    pass


class StaleState(RuntimeError):
    """The job was not in the state the caller expected: someone else moved it first."""


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


def _private_sqlite(db: Path) -> None:
    """The database (and its WAL and shared-memory files, which SQLite creates with the database's mode)
    readable by its owner only; its folder 0700 when orch creates it or when it is ORCH_HOME."""
    if not db.parent.exists() or db.parent.resolve() == orch_home().resolve():
        private_dir(db.parent)
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path == db or path.exists():
            private_file(path)


class _OneConnection:
    """Stands in for the engine inside ``StateStore.snapshot``: every read uses the one connection."""

    def __init__(self, conn: Connection, engine: Engine):
        self.conn, self.dialect, self.url = conn, engine.dialect, engine.url

    def connect(self):
        return nullcontext(self.conn)

    def begin(self):
        raise RuntimeError("a store snapshot is for reading; write through the store itself")


@retry_public_methods
class StateStore:
    """Every public method is one transaction, retried with backoff across a lost connection
    (``orchestrator.state.engine``); the writes that could be applied twice by such a retry (a commit
    whose reply was lost) recognise their own earlier write."""

    def __init__(self, url: str | None = None, clock: Clock | None = None, share_decoded_specs: bool = False):
        self.url = url or default_state_url()
        self.clock = clock or SystemClock()
        if self.url.startswith("sqlite:///"):
            _private_sqlite(Path(self.url.removeprefix("sqlite:///")))
        self._specs: dict[str, JobSpec] = {}
        if self.url == "sqlite://":  # in memory (the simulator): one connection shared by all
            self.engine = create_engine(
                self.url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                **({"json_deserializer": _loads_caching_specs} if share_decoded_specs else {}),
            )
        else:
            self.engine = make_engine(self.url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        call_with_retry(self.url, lambda: migrate(self.engine), "migration")

    @own_retries  # a context manager: the reads through the view are the calls that retry
    @contextmanager
    def snapshot(self) -> Iterator["StateStore"]:
        """A read-only view in which every read sees the store at one instant (one transaction).

        A report that reads the jobs, then each job's intervals, in separate transactions can see a job
        still running and also the intervals its attempt closed with a moment later: the same
        device-hours twice. Reads through the view cannot (SQLite: one deferred transaction, whose
        snapshot is taken at its first read in WAL mode; PostgreSQL: REPEATABLE READ)."""
        with self.engine.connect() as conn:
            if self.engine.dialect.name != "sqlite":
                conn.execution_options(isolation_level="REPEATABLE READ")
            elif self.url != "sqlite://":  # the in-memory store has one connection and no other writer
                conn.exec_driver_sql("BEGIN")
            view = copy.copy(self)
            view.engine = _OneConnection(conn, self.engine)
            try:
                yield view
            finally:
                conn.rollback()

    # ------------------------------------------------------------------ jobs

    def new_job_id(self, name: str) -> str:
        return f"{name}-{secrets.token_hex(3)}"

    @own_retries
    def insert_job(self, row: dict, events: Iterable[EventRecord] = (), owner: Owner = Owner.RAY) -> str:
        """Enqueue a job for the control plane that ``owner`` names (only it will act on the row)."""
        now = self.clock.now()
        values = {
            "state": JobState.QUEUED.value,
            "submitted_at": now,
            "updated_at": now,
            "step": 0,
            "tokens": 0.0,
            "attempt": 0,
            "restarts": 0,
            "cancel_requested": False,
            "preempt_requested": False,
            **row,
            "owner": Owner(owner).value,
        }
        events = list(events)
        retried = []

        def once() -> None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(t.jobs).values(**values))
                    conn.execute(
                        insert(t.transitions).values(
                            job_id=values["id"], from_state=None, to_state=values["state"], reason="submitted", at=now
                        )
                    )
                    self._insert_events(conn, values["id"], events, now)
            except IntegrityError:
                # a retry whose first try did commit (the reply was lost): the row is ours, not a clash
                if not (retried and self._submitted_at(values["id"]) == now):
                    raise
            finally:
                retried.append(True)

        call_with_retry(self.url, once, "insert_job")
        return values["id"]

    def _submitted_at(self, job_id: str) -> float | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.jobs.c.submitted_at).where(t.jobs.c.id == job_id)).scalar()

    def get_job(self, job_id: str) -> dict:
        """A job by id or unique id prefix (taken literally: ``%`` and ``_`` are not patterns)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).mappings().first()
            if row is None:
                prefixed = select(t.jobs).where(t.jobs.c.id.startswith(job_id, autoescape=True))
                rows = conn.execute(prefixed).mappings().all()
                if len(rows) == 1:
                    row = rows[0]
                elif len(rows) > 1:
                    raise JobNotFound(
                        f"'{job_id}' matches {len(rows)} jobs: "
                        f"{', '.join(r['id'] for r in rows[:5])}; give more of the id"
                    )
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

    def list_jobs(self, states: Iterable[JobState] | None = None, owner: Owner | None = None) -> list[dict]:
        """Job rows as stored (what `orch list --json` and /api/jobs show); the control plane reads
        typed ``jobs()`` instead."""
        query = select(t.jobs).order_by(t.jobs.c.submitted_at)
        if states is not None:
            query = query.where(t.jobs.c.state.in_([s.value for s in states]))
        if owner is not None:
            query = query.where(t.jobs.c.owner == Owner(owner).value)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def job_owner(self, job_id: str) -> Owner:
        """Which control plane moves the job."""
        with self.engine.connect() as conn:
            value = conn.execute(select(t.jobs.c.owner).where(t.jobs.c.id == job_id)).scalar()
        if value is None:
            raise JobNotFound(f"no job '{job_id}'; see 'orch list'")
        return Owner(value)

    def job(self, job_id: str) -> JobRecord:
        """A job as a typed record with its spec parsed (by id or unique id prefix)."""
        return self._record(self.get_job(job_id))

    def jobs(self, states: Iterable[JobState] | None = None, owner: Owner | None = None) -> list[JobRecord]:
        """Typed records of the jobs in ``states`` (all when None) that ``owner`` moves (all when None)."""
        return [self._record(row) for row in self.list_jobs(states, owner)]

    def _record(self, row: dict) -> JobRecord:
        spec = self._specs.get(row["id"])
        if spec is None:  # a job's spec never changes once submitted: parse it once per store
            spec = self._specs[row["id"]] = validate_mapping(row["spec"], row["id"])
        return JobRecord.from_row(row, spec)

    def holding_jobs(self, node: str | None = None) -> list[dict]:
        """The jobs holding devices (placing, running, checkpointing, recovering), or those holding ``node``."""
        jobs = self.list_jobs(HOLDING)
        return jobs if node is None else [j for j in jobs if node in (j["assignment"] or [])]

    @own_retries
    def transition(
        self,
        job_id: str,
        expect: JobState,
        to: JobState,
        reason: str,
        *,
        updates: dict | None = None,
        events: Iterable[EventRecord] = (),
        extra: Callable[[Connection, float], None] | None = None,
        at: float | None = None,
    ) -> None:
        """Move a job ``expect -> to`` atomically with its transition row, events and any extra
        writes (ledger intervals); raise ``StaleState`` if the job was no longer in ``expect``.

        ``at``: the time to record, when the caller priced ledger rows up to it (the intervals a move
        closes end exactly when the move is recorded); the store's clock otherwise.

        Retried across a lost connection with the same timestamp: a retry that finds the job already
        moved by a transition row identical to its own (from, to, reason, time) knows its first try
        committed, and returns instead of applying it (or its ledger rows) twice."""
        check_transition(expect, to)
        now = self.clock.now() if at is None else at
        values = {"state": to.value, "updated_at": now, **(updates or {})}
        if to.is_terminal:
            values.setdefault("ended_at", now)
        events = list(events)

        def once() -> None:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(t.jobs).where(t.jobs.c.id == job_id, t.jobs.c.state == expect.value).values(**values)
                )
                if result.rowcount != 1:
                    if self._applied(conn, job_id, expect, to, reason, now):
                        return
                    raise StaleState(f"job {job_id} is no longer {expect.value}")
                conn.execute(
                    insert(t.transitions).values(
                        job_id=job_id, from_state=expect.value, to_state=to.value, reason=reason, at=now
                    )
                )
                self._insert_events(conn, job_id, events, now)
                if extra is not None:
                    extra(conn, now)

        call_with_retry(self.url, once, "transition")

    @staticmethod
    def _applied(conn: Connection, job_id: str, expect: JobState, to: JobState, reason: str, at: float) -> bool:
        last = (
            conn.execute(
                select(t.transitions)
                .where(t.transitions.c.job_id == job_id)
                .order_by(t.transitions.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return last is not None and (last["from_state"], last["to_state"], last["reason"], last["at"]) == (
            expect.value,
            to.value,
            reason,
            at,
        )

    # ------------------------------------------------------------------ named writers of job fields
    # Besides ``transition`` (the controller's), each field a job row has is written by one method that
    # says why; the row's state is never written here.

    def _write_job(self, job_id: str, values: dict, events: Iterable[EventRecord] = ()) -> None:
        now = self.clock.now()
        with self.engine.begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values, updated_at=now))
            self._insert_events(conn, job_id, events, now)

    def record_gang(
        self,
        job_id: str,
        attempt: int,
        assignment: list[str],
        holds: list[dict],
        closing: list | None = None,
        at: float | None = None,
    ) -> None:
        """A RayJob's driver starts attempt ``attempt`` of a Kubernetes-owned job on ``assignment``:
        the one writer of such a row's ``assignment``, ``holds`` and ``attempt`` (a Ray controller's
        placement transition writes them for its own rows). ``closing``: the ledger rows of the attempt
        before, which a new driver ends (KubeRay ran the entrypoint again), written in the same
        transaction, ending at ``at`` (the gang event's time, so the attempts leave no gap between them).
        ``StaleState`` if another driver recorded this attempt first."""
        now = self.clock.now() if at is None else at
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.jobs)
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.owner == Owner.KUBERNETES.value,
                    t.jobs.c.attempt == attempt - 1,
                )
                .values(assignment=assignment, holds=holds, attempt=attempt, updated_at=now)
            )
            if result.rowcount != 1:
                raise StaleState(f"job {job_id}: attempt {attempt} is already recorded, or the job is not a RayJob's")
            self.insert_intervals(conn, self._team_of(conn, job_id), closing or [])
            event = EventRecord(
                GANG_EVENT,
                f"{job_id}: attempt {attempt} on {', '.join(assignment)}",
                {"attempt": attempt, "nodes": assignment},
                "rayjob",
            )
            self._insert_events(conn, job_id, [event], now)

    @staticmethod
    def _team_of(conn: Connection, job_id: str) -> str:
        return conn.execute(select(t.jobs.c.team).where(t.jobs.c.id == job_id)).scalar()

    def request_cancel(self, job_id: str, actor: str) -> None:
        """A user asks for the job's cancellation; the controller stops its runner and moves it."""
        self._write_job(
            job_id,
            {"cancel_requested": True, "cancel_requested_at": self.clock.now()},
            [EventRecord("job.cancel_requested", f"{job_id}: cancel requested", actor=actor)],
        )

    def request_preempt(
        self, job_id: str, reason: str, actor: str, deadline: float | None = None, data: dict | None = None
    ) -> None:
        """Ask the job to checkpoint and give its nodes back: for a higher-priority job (the scheduler),
        a drain (an operator) or an interruption notice (``deadline``: when the node goes). The one
        writer of ``preempt_requested``/``preempt_deadline``; an earlier deadline stands."""
        now = self.clock.now()
        detail = {**(data or {}), **({"deadline": deadline} if deadline is not None else {})}
        event = EventRecord("job.preempting", f"{job_id}: {reason}", detail or None, actor)
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"preempt_requested": True, "updated_at": now}
            if deadline is not None:
                standing = conn.execute(select(t.jobs.c.preempt_deadline).where(t.jobs.c.id == job_id)).scalar()
                values["preempt_deadline"] = deadline if standing is None else min(standing, deadline)
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))
            self._insert_events(conn, job_id, [event], now)

    def record_outcome(self, job_id: str, outcome: RunnerOutcome) -> None:
        """The runner's (or the simulator's) account of how an attempt ended; the controller acts on it."""
        self._write_job(job_id, {"outcome": outcome.as_row()})

    def record_checkpoint(self, job_id: str, step: int | None, announce: bool = True) -> None:
        """The newest committed checkpoint of the job (``announce``: with a ``checkpoint.committed`` event)."""
        events = [EventRecord("checkpoint.committed", f"{job_id}: checkpoint at step {step}", {"step": step})]
        self._write_job(job_id, {"last_checkpoint_step": step}, events if announce else ())

    def amend_spec(self, job_id: str, spec: dict, actor: str, reason: str) -> None:
        """Replace a submitted job's spec (an operator changing its budget or its pools' expected rates),
        validated first; the parsed copy this store keeps is dropped."""
        validate_mapping(spec, job_id)
        self._write_job(job_id, {"spec": spec}, [EventRecord("job.spec_amended", f"{job_id}: {reason}", actor=actor)])
        self._specs.pop(job_id, None)

    def set_wait_reason(self, job_id: str, reason: str, event: EventRecord) -> None:
        """Why a queued job waits (shown by `orch status`), recorded with the event that says so."""
        self._write_job(job_id, {"message": reason}, [event])

    def transitions(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.transitions).where(t.transitions.c.job_id == job_id).order_by(t.transitions.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def last_transition_at(self, job_id: str, to_state: JobState) -> float | None:
        """When the job last entered ``to_state`` (the ledger asks for its latest placement)."""
        query = (
            select(t.transitions.c.at)
            .where(t.transitions.c.job_id == job_id, t.transitions.c.to_state == to_state.value)
            .order_by(t.transitions.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    # ------------------------------------------------------------------ events and metrics

    def _insert_events(self, conn: Connection, job_id: str | None, records: Iterable[EventRecord], now: float) -> None:
        rows = [
            {"job_id": job_id, "kind": e.kind, "message": e.message, "data": e.data, "actor": e.actor, "at": now}
            for e in records
        ]
        if rows:
            conn.execute(insert(t.events), rows)

    def add_event(
        self, kind: str, message: str, job_id: str | None = None, data: dict | None = None, actor: str = "orch"
    ) -> None:
        with self.engine.begin() as conn:
            self._insert_events(conn, job_id, [EventRecord(kind, message, data, actor)], self.clock.now())

    def events(self, job_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[dict]:
        query = select(t.events).where(t.events.c.id > after_id).order_by(t.events.c.id).limit(limit)
        if job_id is not None:
            query = query.where(t.events.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def events_of(self, kinds: Iterable[str], after_id: int = 0) -> list[dict]:
        """Every event of these kinds after ``after_id``, oldest first (the controller's record of the
        spares it added)."""
        query = (
            select(t.events).where(t.events.c.kind.in_(list(kinds)), t.events.c.id > after_id).order_by(t.events.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def last_event_at(self, job_id: str, kind: str) -> float | None:
        """When the job's newest event of ``kind`` happened (the scheduler's view of how fresh a
        running job's checkpoint is: ``checkpoint.committed``)."""
        query = (
            select(t.events.c.at)
            .where(t.events.c.job_id == job_id, t.events.c.kind == kind)
            .order_by(t.events.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def restarts_since(self, job_id: str, since: float) -> list[tuple[float, str]]:
        """When the job's restarts since ``since`` happened and of what kind (``job.recovering`` events;
        the controller's restart budget counts them over its window). Rows written before restarts had
        a kind count as infrastructure."""
        query = (
            select(t.events.c.at, t.events.c.data)
            .where(t.events.c.job_id == job_id, t.events.c.kind == "job.recovering", t.events.c.at >= since)
            .order_by(t.events.c.id)
        )
        with self.engine.connect() as conn:
            return [(row.at, (row.data or {}).get("restart", "infrastructure")) for row in conn.execute(query)]

    def add_metrics(self, job_id: str, attempt: int, rows: list[dict]) -> None:
        """Append step metrics and move the job's progress fields to the newest step."""
        if not rows:
            return
        now = self.clock.now()
        last = max(rows, key=lambda r: r["step"])
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.metrics),
                [
                    {"job_id": job_id, "attempt": attempt, "step": r["step"], "at": r.get("wall_time", now), "data": r}
                    for r in rows
                ],
            )
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id)
                .values(
                    step=last["step"],
                    tokens=last.get("tokens", 0.0),
                    loss=last.get("loss"),
                    tokens_per_s=last.get("tokens_per_s"),
                    updated_at=now,
                )
            )

    def metrics(self, job_id: str, after_step: int = -1) -> list[dict]:
        """Each step's newest metrics (a step re-run after a restart replaces the lost one)."""
        query = (
            select(t.metrics.c.step, t.metrics.c.data, t.metrics.c.attempt, t.metrics.c.at)
            .where(t.metrics.c.job_id == job_id, t.metrics.c.step > after_step)
            .order_by(t.metrics.c.id)
        )
        with self.engine.connect() as conn:
            latest = {r.step: {**r.data, "attempt": r.attempt, "at": r.at} for r in conn.execute(query)}
        return [latest[s] for s in sorted(latest)]

    def metrics_of_attempt(self, job_id: str, attempt: int) -> list[dict]:
        query = (
            select(t.metrics.c.data, t.metrics.c.at)
            .where(t.metrics.c.job_id == job_id, t.metrics.c.attempt == attempt)
            .order_by(t.metrics.c.id)
        )
        with self.engine.connect() as conn:
            return [{**r.data, "attempt": attempt, "at": r.at} for r in conn.execute(query)]

    # ------------------------------------------------------------------ ledger

    @staticmethod
    def insert_intervals(conn: Connection, team: str, intervals: list) -> None:
        """Write ledger intervals on the caller's connection (inside its transaction)."""
        rows = [{**i.as_row(), "team": team} for i in intervals]
        if rows:
            conn.execute(insert(t.ledger_intervals), rows)

    def intervals(self, job_id: str | None = None) -> list[Interval]:
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

    def noticed_nodes(self) -> dict[str, float]:
        """Cordoned nodes that are going away on an interruption notice, with when they go."""
        query = select(t.node_states.c.name, t.node_states.c.notice_deadline).where(
            t.node_states.c.cordoned.is_(True), t.node_states.c.notice_deadline.is_not(None)
        )
        with self.engine.connect() as conn:
            return {r.name: r.notice_deadline for r in conn.execute(query)}

    def set_cordon(
        self, name: str, cordoned: bool, reason: str, actor: str, notice_deadline: float | None = None
    ) -> None:
        """Cordon (or uncordon) a node in orch's own list; ``notice_deadline``: the node is going away
        then (an interruption notice). Uncordoning, or cordoning without a notice, clears it."""
        now = self.clock.now()
        values = {
            "cordoned": cordoned,
            "reason": reason,
            "updated_at": now,
            "notice_deadline": notice_deadline if cordoned else None,
        }
        with self.engine.begin() as conn:
            exists = conn.execute(select(t.node_states.c.name).where(t.node_states.c.name == name)).first()
            if exists:
                conn.execute(update(t.node_states).where(t.node_states.c.name == name).values(**values))
            else:
                conn.execute(insert(t.node_states).values(name=name, **values))
            kind = "node.cordon" if cordoned else "node.uncordon"
            self._insert_events(conn, None, [EventRecord(kind, f"{name}: {reason}", {"node": name}, actor)], now)

    def node_history(self) -> list[dict]:
        """Every recorded node change (name, pool, pool_kind, devices, state, at), oldest first."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(t.node_history).order_by(t.node_history.c.id)).mappings()]

    def latest_node_states(self) -> dict[str, dict]:
        """Each node's newest recorded change, by name."""
        newest = select(func.max(t.node_history.c.id)).group_by(t.node_history.c.name)
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.node_history).where(t.node_history.c.id.in_(newest))).mappings()
            return {r["name"]: dict(r) for r in rows}

    def record_node_changes(self, changes: list[dict]) -> None:
        """Append node changes (name, pool, pool_kind, devices, state) seen now. One writer: the
        controller (``ControllerCore.record_nodes``)."""
        if changes:
            now = self.clock.now()
            with self.engine.begin() as conn:
                conn.execute(insert(t.node_history), [{**c, "at": now} for c in changes])

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
