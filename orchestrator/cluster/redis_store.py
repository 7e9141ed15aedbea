"""The Redis that backs the embedded cluster's GCS when it runs with fault tolerance (`orch up --ha`).

Ray's GCS keeps the cluster's metadata (nodes, actors, placement groups, jobs) in memory unless it
is given an external Redis; with one, a restarted GCS reloads it and the running workers, actors
and objects carry on (Ray docs, "GCS Fault Tolerance": ``RAY_REDIS_ADDRESS=ip:port ray start --head
--redis-password PASSWORD --redis-username default``). The KubeRay manifests do the same with a
Redis Deployment. Here it is a real ``redis-server`` (Debian's package) on 127.0.0.1, with its
append-only file under ORCH_HOME and a password kept in a 0600 file beside it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil

from orchestrator.errors import OrchError


class RedisError(OrchError):
    pass


def redis_binary() -> str:
    fallback = "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    found = shutil.which("redis-server") or fallback
    if found is None:
        raise RedisError(
            "--ha needs redis-server for the GCS's external storage; install it "
            "(apt-get install redis-server) or start without --ha"
        )
    return found


class RedisServer:
    def __init__(self, home: Path):
        self.dir = Path(home) / "redis"

    @property
    def password_path(self) -> Path:
        return self.dir / "password"

    def password(self) -> str:
        if not self.password_path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(16))
        return self.password_path.read_text().strip()

    def start(self, port: int) -> int:
        """Start redis-server on 127.0.0.1:``port`` (append-only persistence); its pid."""
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"  # the password goes in a 0600 file, not on a command line
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                f'bind 127.0.0.1\nport {port}\ndir {self.dir}\nappendonly yes\nsave ""\n'
                f"requirepass {self.password()}\ndaemonize yes\npidfile {self.dir / 'redis.pid'}\n"
                f"logfile {self.dir / 'redis.log'}\nprotected-mode yes\n"
            )
        result = subprocess.run([redis_binary(), str(conf)], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RedisError(f"redis-server did not start: {result.stdout}{result.stderr}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return self.pid() or 0
            except OSError:
                time.sleep(0.05)
        raise RedisError(f"redis-server did not listen on 127.0.0.1:{port}; see {self.dir / 'redis.log'}")

    def pid(self) -> int | None:
        try:
            return int((self.dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> bool:
        """Stop the server this home started (by its pid file); whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            proc = psutil.Process(pid)
            if "redis" not in proc.name():
                return False
            proc.kill()
            proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            return False
        finally:
            (self.dir / "redis.pid").unlink(missing_ok=True)
        return True
