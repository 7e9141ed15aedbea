"""ruff (configured in pyproject.toml: line length 120, pycodestyle, pyflakes, import order, bugbear)
passes on the package and the tests, and its formatter leaves the package, the tests and the benchmarks
as they are, so CI fails on a new finding or an unformatted file like on a failing test. ruff is pinned
to one version in pyproject.toml: another version may format differently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "orchestrator", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "orchestrator", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
