"""The README's orchestration-overhead figures are bench/RESULTS.md's (issue #19: the README said
1.06x while RESULTS.md measured 1.158x). Change RESULTS.md by re-running bench/bench_overhead.py, then
copy its figures into the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
SECTION = "Orchestration overhead: bare torchrun vs orch's Ray Train path"


def _section() -> str:
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    return next(s for s in text.split("\n## ") if s.startswith(SECTION))


def test_the_readme_quotes_the_measured_step_time_ratio():
    measured = re.search(r"Steady-state step-time ratio \(Ray Train / torchrun\): \*\*([0-9.]+)\*\*", _section())
    assert measured, "RESULTS.md's overhead section has no steady-state ratio"
    readme = (ROOT / "README.md").read_text()
    quoted = re.findall(r"torchrun steady-state step time ([0-9.]+)x", readme)
    assert quoted == [measured.group(1)], f"README quotes {quoted}, RESULTS.md measured {measured.group(1)}"


def test_the_readme_quotes_the_measured_start_up_ratio_if_any():
    measured = re.search(r"launch to first step: \*\*([0-9.]+)x\*\*", _section())
    quoted = re.findall(r"launch to first step ([0-9.]+)x", (ROOT / "README.md").read_text())
    assert quoted == ([measured.group(1)] if measured else []), (quoted, measured and measured.group(1))
