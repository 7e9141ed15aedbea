"""Shared fixtures. Tiers: unit tests need nothing; tests marked ``slow`` start real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
V3_SPEC = ROOT / "jobs" / "v3_pretrain.yaml"
MINIMAL_SPEC = ROOT / "tests" / "specs" / "good" / "minimal.yaml"

os.environ.setdefault("DS_ACCELERATOR", "cpu")

# Ray reads its auth settings when first imported, and a process imports it once: every Ray cluster
# this test session starts or joins (embedded clusters, local instances) uses this one token.
_TOKEN_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / f"orch-test-token-{os.getpid()}"
_TOKEN_DIR.mkdir(exist_ok=True)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.pop("RAY_AUTH_TOKEN", None)
from orchestrator.cluster.auth import ensure_token  # noqa: E402

os.environ["RAY_AUTH_TOKEN_PATH"] = str(ensure_token(_TOKEN_DIR))


@pytest.fixture
def orch_home(tmp_path, monkeypatch) -> Path:
    """A private ORCH_HOME so tests never touch ~/.orch."""
    home = tmp_path / "orch_home"
    home.mkdir()
    monkeypatch.setenv("ORCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def postgres():
    """One throw-away PostgreSQL server for the whole session (started on first use, ~1 s).

    Where the binaries are missing the PostgreSQL variants are skipped, except in CI (``CI`` set),
    where ``.ci/run`` installs them and a missing server is a failure."""
    from tests.pgserver import PostgresServer

    try:
        server = PostgresServer().start()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    yield server
    server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path) -> str:
    """A fresh, empty state database: SQLite in a file, or a new database on the session's
    PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("postgres").new_database()
