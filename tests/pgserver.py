"""A throw-away PostgreSQL server for the tests: ``initdb`` a cluster in a temporary folder, start it
with ``pg_ctl`` on a free port, hand out one fresh database per test, stop and delete it at the end.

The binaries come from PATH or Debian's ``/usr/lib/postgresql/<version>/bin`` (``.ci/run`` installs
the ``postgresql`` package). ``initdb`` refuses to run as root, so as root the server runs as the
unprivileged ``nobody`` user (``setpriv``). Password authentication (scram-sha-256) is on, so the
tests can check that the password never appears in a message. fsync is off: the data is
thrown away (an OS crash is not what the tests simulate), and the server's crash behaviour
(``restart(mode="immediate")``) still drops every connection and replays the WAL as a real crash does.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "s3cret-pg-pw"  # a throw-away cluster's; the tests check it is never printed
USER = "orch"


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.initdb, self.pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise FileNotFoundError("initdb/pg_ctl not found (install Debian's postgresql package)")
        self.root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._databases = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            self._as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            os.chown(self.root, 65534, 65534)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as_user, *args], capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> PostgresServer:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_user:
            os.chown(pwfile, 65534, 65534)
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "-A",
            "scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        result = self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
            check=False,
        )
        if result.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 1.0, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as a crash, every connection dropped), stay down for
        ``down_s`` seconds, start it again on the same port."""
        self.stop(mode)
        time.sleep(down_s)
        self._pg_ctl_start()

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"orch_test_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
