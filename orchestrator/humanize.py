"""One way to show money, durations and times to people, used by every command and view.

Money has three significant figures and a unit (``$5.35M``, ``$65.8K``, ``$2.00``); durations read
``45s``, ``3m12s``, ``2h05m``, ``57d``; times are relative (``12s ago``, ``in 3m``) where a table
has no room for a clock.
"""

from __future__ import annotations

MONEY_UNITS = (("B", 1e9), ("M", 1e6), ("K", 1e3))


def money(usd: float | None) -> str:
    """Three significant figures and a unit: ``$5.35M``, ``$65.8K``, ``$170K``, ``$2.00``, ``$0.00399``;
    ``-`` when unknown."""
    if usd is None:
        return "-"
    sign, value = ("-" if usd < 0 else ""), abs(usd)
    if value == 0:
        return "$0.00"
    unit = ""
    for name, size in MONEY_UNITS:
        if float(f"{value:.3g}") >= size:
            unit, value = name, value / size
            break
    return f"{sign}${_three_figures(value)}{unit}"


def _three_figures(x: float) -> str:
    """``x`` to three significant figures without an exponent (``x`` below 1000)."""
    x = float(f"{x:.3g}")
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    decimals = 2
    while x < 10 ** -(decimals - 2) and decimals < 12:
        decimals += 1
    return f"{x:.{decimals}f}"


def duration(seconds: float | None) -> str:
    """``45s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago(at: float | None, now: float) -> str:
    """``12s ago`` / ``in 3m`` (coarse: one unit); ``-`` when unknown."""
    if at is None:
        return "-"
    delta = now - at
    text = _coarse(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def _coarse(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
