"""How long this process spends in Python's garbage collector: each step reports it (``gc_s``).

Why: a rank under Ray Train holds more Python objects than one under torchrun (Ray, Ray Train and their
dependencies: about 495,000 tracked objects against 399,000 with torch, DeepSpeed and orch's trainer
alone, here), and a full collection walks all of them (257 ms against 184 ms, here). The overhead
benchmark (``bench/bench_overhead.py``) reads the figure to say how much of a step's difference between
the launchers is the collector's.
"""

from __future__ import annotations

import gc
import time


class GcClock:
    """Seconds spent in collections since ``start()``, from ``gc.callbacks`` (whichever thread collects)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.collections = 0
        self._began: float | None = None

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:  # "stop": collections neither nest nor overlap (the collector holds the GIL)
            self.total_s += time.perf_counter() - self._began
            self.collections += 1
            self._began = None

    def start(self) -> "GcClock":
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        return self

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


PROCESS_CLOCK = GcClock()  # one per process: a warm process runs one trainer after another
