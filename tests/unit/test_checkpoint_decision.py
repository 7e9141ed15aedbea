"""Every rank saves the same steps: four gloo processes whose clocks and measured stalls differ
(the clock seam) take the collective decision, and every save commits. The same ranks deciding
on their own (the old way) save at different steps, and rank 0's commit fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.checkpoint.objects import FileObjectStore
from orchestrator.checkpoint.store import CheckpointStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
WORLD = 4


def run_gang(tmp_path: Path, interval: str, mode: str = "collective") -> list[dict]:
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.decision_rank",
                str(r),
                str(WORLD),
                str(tmp_path / "init"),
                str(tmp_path / "store"),
                str(out),
                interval,
                mode,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(WORLD)
    ]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    results = []
    for rank in range(WORLD):
        path = out / f"rank{rank}.json"
        assert path.exists(), logs[rank][-2000:]
        results.append(json.loads(path.read_text()))
    return results


@pytest.mark.parametrize("interval", ["{minutes: 0.1}", "auto"])
def test_ranks_with_different_clocks_and_stalls_save_the_same_steps(tmp_path, interval):
    results = run_gang(tmp_path, interval)
    saved = [r["saved"] for r in results]
    assert all(s == saved[0] for s in saved) and len(saved[0]) >= 3, saved
    assert [r["error"] for r in results] == [""] * WORLD
    store = CheckpointStore(FileObjectStore(tmp_path / "store"), "job")
    assert store.committed() == saved[0]
    assert all(store.verify(step) == [] for step in saved[0])
    # every rank's policy saw the gang's slowest stall (rank 3's 2.0 s), not its own
    assert {r["cost"] for r in results} == {2.0}
    if interval == "auto":  # the interval followed that cost, the same on every rank
        assert all(r["intervals"] == results[0]["intervals"] for r in results)


def test_ranks_deciding_alone_save_different_steps_and_the_commit_fails(tmp_path):
    results = run_gang(tmp_path, "{minutes: 0.1}", mode="per-rank")
    assert len({tuple(r["saved"]) for r in results}) > 1
    assert "did not finish their shards" in results[0]["error"]
