"""The `orch` command as a user runs it: a real process, exit statuses, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import MINIMAL_SPEC, V3_SPEC


def orch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True)


def test_validate_valid_spec_prints_a_one_screen_summary():
    proc = orch("validate", str(V3_SPEC), "--plan-only")  # dualpipe and fp8: planned, not run here
    assert proc.returncode == 0, proc.stderr
    assert "deepseek-v3-pretrain: valid" in proc.stdout
    assert "PP16 x DP128 (EP64)" in proc.stdout
    assert len(proc.stdout.splitlines()) <= 24


def test_plan_table_shows_layers_costs_and_reference():
    proc = orch("plan", str(V3_SPEC))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "embed .. block.3" in out and "block.60 .. mtp.0" in out
    assert "2,664,000" in out and "$5.58M" in out


def test_plan_json_with_profile_and_overrides():
    proc = orch("plan", str(V3_SPEC), "--profile", "local", "--set", "training.seed=9", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["world_size"] == 4 and data["parallelism"]["pipeline"] == 2 and data["parallelism"]["expert"] == 2
    assert data["job"] == "v3-local"


def test_bad_override_exits_2_and_names_the_field():
    proc = orch("plan", str(MINIMAL_SPEC), "--set", "parallelism.expert=3")
    assert proc.returncode == 2
    assert "parallelism.expert" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_file_exits_2():
    proc = orch("validate", "no/such/spec.yaml")
    assert proc.returncode == 2 and "file not found" in proc.stderr


def test_debug_mode_shows_the_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", "no/such.yaml"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "ORCH_DEBUG": "1"},
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_help_lists_the_commands():
    proc = orch("--help")
    assert proc.returncode == 0
    for command in ("validate", "plan"):
        assert command in proc.stdout
