"""`make bench`: run the benchmarks and rewrite bench/RESULTS.md.

``python -m bench.run_all [name ...]`` runs a subset; each benchmark's section is kept in
bench/results/NAME.md (with its date, commit and machine), and RESULTS.md is assembled from all of
them, so a partial run updates only what it ran.
"""

from __future__ import annotations

import datetime
import importlib
import sys
from pathlib import Path

from bench.harness import git_commit, machine_description

BENCHMARKS = [
    "planner",
    "overhead",
    "checkpoint",
    "simulate",
    "restart_budget",
    "recovery",
    "forecast",
    "activations",
    "failover",
    "startup",
    "warm_workers",
]
RESULTS = Path(__file__).parent / "RESULTS.md"
SECTIONS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    sections = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"running {name} ...", flush=True)
        section = module.run()
        print(section.render(), flush=True)
        sections.append(section)
        SECTIONS.mkdir(exist_ok=True)
        stamp = (
            f"Measured on {datetime.date.today().isoformat()} at commit {git_commit()}; "
            f"machine: {machine_description()}."
        )
        rendered = section.render().replace("\n\n", f"\n\n{stamp}\n\n", 1)
        (SECTIONS / f"{name}.md").write_text(rendered)
    parts = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench.run_all`); each section "
        "states when, at which commit and on which machine it was measured.",
        "",
    ]
    parts += [(SECTIONS / f"{n}.md").read_text() for n in BENCHMARKS if (SECTIONS / f"{n}.md").exists()]
    RESULTS.write_text("\n".join(parts))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
