"""README figures equal bench/RESULTS.md: the recovery figures quoted in the README are the
measured ones (a re-run of bench/bench_recovery.py that changes them fails here until the README
follows)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def recovery_totals() -> dict[str, str]:
    """{restart path: node loss -> first step seconds} from the RESULTS.md recovery table."""
    section = (ROOT / "bench" / "RESULTS.md").read_text().split("## Recovery from a node loss", 1)[1].split("\n## ")[0]
    return {
        row.split("|")[1].strip(): re.search(r"\*\*([\d.]+)\*\*", row).group(1)
        for row in section.splitlines()
        if row.startswith("| ") and "**" in row
    }


def test_the_readme_recovery_figures_are_the_measured_ones():
    totals = recovery_totals()
    warm = next(v for k, v in totals.items() if k.startswith("abrupt loss, warm: "))
    cold = next(v for k, v in totals.items() if k.startswith("abrupt loss, cold: "))
    readme = (ROOT / "README.md").read_text()
    claim = re.search(
        r"node loss to the first resumed step ([\d.]+) s through the warm path \(cold path: ([\d.]+) s",
        " ".join(readme.split()),
    )
    assert claim, "README needs: 'node loss to the first resumed step W s through the warm path (cold path: C s'"
    assert (claim.group(1), claim.group(2)) == (warm, cold), f"README says {claim.groups()}, RESULTS.md {warm}, {cold}"
