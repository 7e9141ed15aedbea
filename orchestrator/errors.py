"""Typed errors that reach the user as clean messages (never a traceback) with exit status 2.

Every user-facing failure is an ``OrchError``. The CLI catches ``OrchError`` alone and prints
``str(err)``; anything else is a bug and keeps its traceback. Errors about a field carry the
field path, the offending value and the fix, so a user can act on them without reading code.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass


class OrchError(Exception):
    """Base of all errors orch reports to users. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


@dataclass(frozen=True)
class FieldProblem:
    """One problem with one field of a spec: where, what was given, what is wrong, how to fix it."""

    path: str
    message: str
    value: object = None
    fix: str = ""

    def render(self) -> str:
        shown = _short(self.value)
        text = f"{self.path or '<spec>'}: {self.message}"
        if shown is not None:
            text += f" (got {shown})"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 70, 70, 40


def _short(value: object) -> str | None:
    """At most 80 characters, built without ever rendering the whole value: a YAML alias bomb is a
    small file whose value is billions of items, and ``repr`` of it would never finish."""
    if value is None:
        return None
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ProblemListError(OrchError):
    """An error made of several field problems, all reported at once."""

    title = "invalid"

    def __init__(self, problems: list[FieldProblem], source: str = ""):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"{head}{self.title}: {len(self.problems)} {noun}"]
        lines += ["  - " + p.render().replace("\n", "\n  ") for p in self.problems]
        return "\n".join(lines)


class SpecError(ProblemListError):
    """The job spec cannot be read or does not validate."""

    title = "invalid job spec"


class PlanError(ProblemListError):
    """The spec is well-formed but the job cannot be laid out (mesh, memory, schedule)."""

    title = "impossible plan"
