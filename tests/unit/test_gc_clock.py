"""The per-step garbage-collector time a rank reports (``gc_s``, orchestrator/train/gc_clock.py)."""

from __future__ import annotations

import gc

from orchestrator.train.gc_clock import GcClock


def test_the_clock_counts_the_collections_made_while_it_runs_and_none_after():
    clock = GcClock().start()
    try:
        garbage = [[i] for i in range(200_000)]  # many tracked objects: a full collection takes a while
        gc.collect()
        gc.collect()
        assert clock.collections >= 2
        assert clock.total_s > 0.0
    finally:
        clock.stop()
    clock.start()  # twice: one callback, not two
    clock.start()
    before = clock.collections
    gc.collect()
    assert clock.collections == before + 1
    clock.stop()
    gc.collect()
    assert clock.collections == before + 1
    del garbage
