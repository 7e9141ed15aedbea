"""Every broken spec in tests/specs/bad/ yields its expected, clean error and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import main
from orchestrator.errors import OrchError
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec

BAD = Path(__file__).resolve().parents[1] / "specs" / "bad"
EXPECTED = yaml.safe_load((BAD / "EXPECTED.yaml").read_text())


def test_the_folder_holds_at_least_30_bad_specs():
    assert len(EXPECTED) >= 30
    on_disk = {p.name for p in BAD.glob("*.yaml")} - {"EXPECTED.yaml"}
    assert on_disk == set(EXPECTED), "every bad spec needs an expected error (and vice versa)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec_error(name):
    with pytest.raises(OrchError) as caught:
        make_plan(load_spec(BAD / name))
    text = str(caught.value)
    for fragment in EXPECTED[name]:
        assert fragment in text, f"{name}: expected {fragment!r} in:\n{text}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_validate_exits_2_without_traceback(name, capsys):
    assert main(["validate", str(BAD / name)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("orch: error: ")
    assert captured.out == ""


@pytest.mark.parametrize("name", ["binary.yaml", "yaml_syntax.yaml", "memory_over_budget.yaml"])
def test_real_process_exit_status(name):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(BAD / name)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error" in proc.stderr


def test_validate_reports_all_problems_not_just_the_first(tmp_path):
    spec = yaml.safe_load((BAD.parent / "good" / "minimal.yaml").read_text())
    spec["model"]["dimm"] = 1
    spec["model"]["n_heads"] = -1
    spec["parallelism"]["schedule"] = "zigzag"
    del spec["cost"]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(OrchError) as caught:
        load_spec(path)
    paths = {p.path for p in caught.value.problems}
    assert paths == {"model.dimm", "model.n_heads", "parallelism.schedule", "cost"}
