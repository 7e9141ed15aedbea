"""Backup and restore of the state store, the same on SQLite and PostgreSQL.

A backup is a gzipped JSON-lines file: a header (format, schema revision, row counts), then one
line per row of every table. It is read in one transaction (a consistent snapshot: PostgreSQL's
REPEATABLE READ, SQLite's read transaction under WAL), so a controller writing meanwhile does not
tear it. Being SQL-level rather than ``pg_dump``, it also moves a store between backends (a
laptop's SQLite to the cluster's PostgreSQL) and restores a backup of an older schema: the target
is migrated to the backup's revision, loaded, then migrated to the newest.

Restoring refuses a target that holds jobs unless ``force`` (which replaces its contents), and
loads everything in one transaction: an error leaves the target as it was.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

from sqlalchemy import Integer, delete, func, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from orchestrator.errors import OrchError
from orchestrator.state import tables as t
from orchestrator.state.engine import call_with_retry, make_engine, redact
from orchestrator.state.store import MIGRATIONS, StateStore

FORMAT = "orch-state-backup"
VERSION = 1


class BackupError(OrchError):
    pass


def _revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _tables(conn: Connection) -> list:
    """The tables that exist in this database (a backup of an older revision lacks the newer ones)."""
    present = set(inspect(conn).get_table_names())
    return [table for table in t.metadata.sorted_tables if table.name in present]


def backup(url: str, path: Path) -> dict:
    """Write a backup of the store at ``url`` to ``path`` (atomically); return its header."""
    engine = make_engine(url)
    try:
        return call_with_retry(url, lambda: _backup_once(engine, url, Path(path)), "backup")
    finally:
        engine.dispose()


def _backup_once(engine: Engine, url: str, path: Path) -> dict:
    tmp = path.with_name(path.name + ".partial")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        revision = _revision(conn)
        if revision is None:
            raise BackupError(f"{redact(url)} holds no orch state store (no schema revision); check ORCH_STATE_URL")
        present = _tables(conn)
        counts = {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one() for table in present}
        header = {
            "format": FORMAT,
            "version": VERSION,
            "revision": revision,
            "dialect": engine.dialect.name,
            "created_at": time.time(),
            "counts": counts,
        }
        with gzip.open(tmp, "wt", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            for table in present:
                key = list(table.primary_key.columns)
                stored = {c["name"] for c in inspect(conn).get_columns(table.name)}  # an older revision has fewer
                columns = [c for c in table.columns if c.name in stored]
                for row in conn.execute(select(*columns).order_by(*key)).mappings():
                    out.write(json.dumps({"table": table.name, "row": dict(row)}) + "\n")
    os.replace(tmp, path)
    return header


def _read(path: Path) -> tuple[dict, list[tuple[str, dict]]]:
    if not path.exists():
        raise BackupError(f"backup file {path} does not exist; give the file 'orch state backup' wrote")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            header = json.loads(handle.readline())
            rows = [(item["table"], item["row"]) for item in map(json.loads, handle)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(
            f"{path} is not an orch state backup ({exc}); give the file 'orch state backup' wrote"
        ) from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise BackupError(
            f"{path} is not an orch state backup (format {header.get('format')!r}, "
            f"version {header.get('version')!r}; expected {FORMAT!r} version {VERSION})"
        )
    return header, rows


def restore(url: str, path: Path, force: bool = False) -> dict:
    """Load the backup at ``path`` into the store at ``url``; return the header and row counts."""
    header, rows = _read(Path(path))
    counts: dict[str, int] = {}
    for name, _ in rows:
        counts[name] = counts.get(name, 0) + 1
    if counts != {k: v for k, v in header["counts"].items() if v}:
        raise BackupError(
            f"{path} is truncated or corrupt: its rows {counts} differ from its header {header['counts']}"
        )
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        call_with_retry(url, lambda: _restore_once(engine, url, header, rows, force), "restore")
    finally:
        engine.dispose()
    StateStore(url)  # migrates a backup of an older revision to the newest
    return {**header, "restored": counts}


def _restore_once(engine: Engine, url: str, header: dict, rows: list[tuple[str, dict]], force: bool) -> None:
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        current = _revision(conn)
        if current is not None:
            jobs = conn.execute(select(func.count()).select_from(t.jobs)).scalar_one()
            if jobs and not force:
                raise BackupError(
                    f"{redact(url)} already holds {jobs} jobs; restore into an empty store, or "
                    "pass --force to replace its contents"
                )
        if current != header["revision"]:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            if current is None:
                command.upgrade(config, header["revision"])
            else:
                command.downgrade(config, header["revision"]) if _is_newer(
                    current, header["revision"]
                ) else command.upgrade(config, header["revision"])
        present = _tables(conn)
        for table in reversed(present):
            conn.execute(delete(table))
        by_name = {table.name: table for table in present}
        for table in present:
            batch = [row for name, row in rows if name == table.name]
            if batch:
                conn.execute(insert(by_name[table.name]), batch)
        if engine.dialect.name == "postgresql":
            _reset_sequences(conn, present)


def _is_newer(current: str, target: str) -> bool:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    return any(rev.revision == target for rev in script.iterate_revisions(current, "base"))


def _reset_sequences(conn: Connection, present: list) -> None:
    """Explicit ids were inserted: move each serial column's sequence past them."""
    for table in present:
        for column in table.primary_key.columns:
            if isinstance(column.type, Integer) and column.autoincrement is not False:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                        f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"
                    )
                )
