"""`orch state backup|restore|show`: the state store's backups and where it is.

The store is ``ORCH_STATE_URL`` (PostgreSQL on Kubernetes) or ORCH_HOME's SQLite file; ``--url``
names another. Backups are SQL-level (``orchestrator.state.backup``), so one taken from SQLite
restores into PostgreSQL and the other way round. URLs are printed with the password hidden.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.common import add_json_argument, print_json
from orchestrator.paths import default_state_url
from orchestrator.state import tables as t
from orchestrator.state.backup import backup, restore
from orchestrator.state.engine import redact
from orchestrator.state.lease import Lease
from orchestrator.state.store import StateStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("state", help="back up, restore or show the state store (jobs, events, ledger)")
    state = p.add_subparsers(dest="state_command", metavar="ACTION")
    state.required = True
    b = state.add_parser("backup", help="write a consistent backup of the state store to a file")
    b.add_argument("file", help="the backup to write (gzipped JSON lines), e.g. orch-state.jsonl.gz")
    b.add_argument("--url", help="the store (default: ORCH_STATE_URL, else ORCH_HOME/state.db)")
    add_json_argument(b)
    b.set_defaults(func=cmd_backup)
    r = state.add_parser("restore", help="load a backup into an empty state store (same or other backend)")
    r.add_argument("file", help="a file written by 'orch state backup'")
    r.add_argument("--url", help="the store to restore into (default: ORCH_STATE_URL, else ORCH_HOME/state.db)")
    r.add_argument("--force", action="store_true", help="replace the contents of a store that holds jobs")
    add_json_argument(r)
    r.set_defaults(func=cmd_restore)
    s = state.add_parser("show", help="the store's URL (password hidden), schema revision, rows and leader")
    s.add_argument("--url", help="the store (default: ORCH_STATE_URL, else ORCH_HOME/state.db)")
    add_json_argument(s)
    s.set_defaults(func=cmd_show)


def _url(args: argparse.Namespace) -> str:
    return args.url or default_state_url()


def cmd_backup(args: argparse.Namespace) -> int:
    header = backup(_url(args), Path(args.file))
    if args.json:
        print_json(header)
        return 0
    rows = sum(header["counts"].values())
    print(
        f"backed up {redact(_url(args))} (revision {header['revision']}, {header['counts'].get('jobs', 0)} jobs, "
        f"{rows} rows) to {args.file}"
    )
    print(f"restore with: orch state restore {args.file} --url URL")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    result = restore(_url(args), Path(args.file), force=args.force)
    if args.json:
        print_json(result)
        return 0
    print(
        f"restored {sum(result['restored'].values())} rows ({result['restored'].get('jobs', 0)} jobs) from "
        f"{args.file} into {redact(_url(args))}"
    )
    print("next: orch list")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = StateStore(_url(args))
    lease = Lease(store).current()
    info = {
        "url": redact(store.url),
        "dialect": store.engine.dialect.name,
        "rows": {name: store.count(name) for name in t.metadata.tables},
        "leader": lease.__dict__ if lease else None,
    }
    if args.json:
        print_json(info)
        return 0
    print(f"state store {info['url']} ({info['dialect']})")
    for name, count in info["rows"].items():
        print(f"  {name}: {count} rows")
    if lease:
        state = "held" if lease.expires_at > store.clock.now() else "expired"
        print(f"controller lease: {lease.holder}, term {lease.term}, {state}")
    return 0
