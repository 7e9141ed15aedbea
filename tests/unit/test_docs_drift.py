"""Docs that cannot drift from the code: the state diagram of docs/control-plane.md is the one
generated from the transition table, and every "where is X" entry of docs/architecture.md names a
file that exists and a name defined in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from orchestrator.lifecycle import ALLOWED, TRANSITIONS, JobState, state_diagram

ROOT = Path(__file__).resolve().parents[2]


def mermaid_block(markdown: str, heading: str) -> str:
    section = markdown.split(heading, 1)[1]
    return re.search(r"```mermaid\n(.*?)```", section, re.S).group(1)


def test_state_diagram_is_generated_from_the_transition_table():
    drawn = mermaid_block((ROOT / "docs" / "control-plane.md").read_text(), "## Job states")
    assert drawn == state_diagram(), (
        "docs/control-plane.md's diagram differs from orchestrator/lifecycle.py; "
        "paste the output of lifecycle.state_diagram() into it"
    )


def test_the_diagram_draws_every_allowed_transition():
    drawn = state_diagram()
    edges = set(re.findall(r"^\s+(\w+) --> (\w+)", drawn, re.M))
    allowed = {(frm.value, to.value) for frm, targets in ALLOWED.items() for to in targets}
    assert edges == allowed and len(allowed) == len(TRANSITIONS) == 29
    assert ("checkpointing", "recovering") in edges  # the spot-notice path: save, then restart on a spare
    assert all(f"{s.value} --> [*]" in drawn for s in JobState if s.is_terminal)


def defined_names(path: Path) -> set[str]:
    """Module-level functions, classes and assignments, and ``Class.method`` for methods."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}.{f.name}" for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_where_is_table_points_at_real_code():
    """Rows of the table read ``| what | `path/to/file.py` | `name`, `other` |``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| ([^|]+) \| `([\w/.]+\.py)` \| ([^|]+) \|$", text, re.M)
    assert len(rows) >= 6, "the 'where is X' table is missing"
    wrong = []
    for what, file, names in rows:
        path = ROOT / file
        if not path.exists():
            wrong.append(f"{what.strip()}: {file} does not exist")
            continue
        known = defined_names(path)
        for name in re.findall(r"`([\w.]+)`", names):
            if name not in known:
                wrong.append(f"{what.strip()}: {file} defines no {name}")
    assert not wrong, "\n".join(wrong)
    for topic in ("spot notice", "GPU-hours", "transitions", "hot spares", "checkpoint commit", "rank"):
        assert any(topic.lower() in what.lower() for what, _, _ in rows), f"no row about {topic}"
