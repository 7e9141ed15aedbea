"""Clocks for tests that must see what a slow machine does between two readings."""

from __future__ import annotations

from orchestrator.clock import ManualClock


class TickingClock(ManualClock):
    """Every reading is ``tick`` seconds after the last: the time a loaded machine spends between two
    calls. A ledger row priced on one reading and the move that writes it recorded on another differ."""

    def __init__(self, start: float = 0.0, tick: float = 0.25):
        super().__init__(start)
        self.tick = tick

    def now(self) -> float:
        return self.advance(self.tick)
