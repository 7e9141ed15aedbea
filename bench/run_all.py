"""`make bench`: run every benchmark and rewrite bench/RESULTS.md.

``python -m bench.run_all [name ...]`` runs a subset (names: planner, ...); the results file is
rewritten only when every benchmark was run.
"""

from __future__ import annotations

import datetime
import importlib
import sys
from pathlib import Path

from bench.harness import git_commit, machine_description

BENCHMARKS = ["planner", "overhead"]
RESULTS = Path(__file__).parent / "RESULTS.md"


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    sections = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"running {name} ...", flush=True)
        section = module.run()
        print(section.render(), flush=True)
        sections.append(section)
    if set(names) == set(BENCHMARKS):
        header = [
            "# Benchmark results",
            "",
            f"Written by `make bench` on {datetime.date.today().isoformat()} at commit {git_commit()}.",
            f"Machine: {machine_description()}.",
            "",
        ]
        RESULTS.write_text("\n".join(header + [s.render() for s in sections]))
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
