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
