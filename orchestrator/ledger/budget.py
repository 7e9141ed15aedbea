"""Budgets: a team (teams table) or a job (spec ``cost.budget_*``) may carry a GPU-hour or dollar
budget. Checked when the controller admits work: a team past its budget gets no new placements (its
jobs wait, with the figures), a job past its own budget fails with ``budget_exceeded``. Crossing 80%
and 100% of a budget is recorded once as an event."""

from __future__ import annotations

from dataclasses import dataclass

WARN_AT = (0.8, 1.0)


@dataclass(frozen=True)
class BudgetCheck:
    over: bool
    reason: str
    fraction: float


def check(
    spent_hours: float, spent_usd: float, budget_hours: float | None, budget_usd: float | None, who: str
) -> BudgetCheck:
    fractions = []
    if budget_hours:
        fractions.append((spent_hours / budget_hours, f"{spent_hours:,.4g} of {budget_hours:,.4g} GPU-hours"))
    if budget_usd:
        fractions.append((spent_usd / budget_usd, f"${spent_usd:,.2f} of ${budget_usd:,.2f}"))
    if not fractions:
        return BudgetCheck(False, "", 0.0)
    fraction, detail = max(fractions)
    return BudgetCheck(fraction >= 1.0, f"{who} budget: {detail} spent", fraction)


def crossed(previous: float, current: float) -> list[float]:
    return [t for t in WARN_AT if previous < t <= current]
