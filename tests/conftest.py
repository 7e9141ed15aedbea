"""Shared fixtures. Tiers: unit tests need nothing; tests marked ``slow`` start real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
V3_SPEC = ROOT / "jobs" / "v3_pretrain.yaml"
MINIMAL_SPEC = ROOT / "tests" / "specs" / "good" / "minimal.yaml"

os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture
def orch_home(tmp_path, monkeypatch) -> Path:
    """A private ORCH_HOME so tests never touch ~/.orch."""
    home = tmp_path / "orch_home"
    home.mkdir()
    monkeypatch.setenv("ORCH_HOME", str(home))
    return home
