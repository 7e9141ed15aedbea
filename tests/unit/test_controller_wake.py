"""A runner that recorded its outcome wakes the controller (``ControllerLoop.wake``), so a lost gang is
restarted without waiting out the rest of the loop's interval (bench_recovery's detect column)."""

from __future__ import annotations

import threading
import time

from orchestrator.control.controller import ControllerLoop


class CountingCore:
    """Only what the loop calls: ``reconcile`` (the controller itself is not what is tested here)."""

    def __init__(self):
        self.passes = 0
        self.ran = threading.Condition()

    def lead(self) -> None:
        pass

    def reconcile(self) -> None:
        with self.ran:
            self.passes += 1
            self.ran.notify_all()


def wait_for_passes(core: CountingCore, n: int, timeout: float) -> bool:
    with core.ran:
        return core.ran.wait_for(lambda: core.passes >= n, timeout=timeout)


def test_a_woken_loop_runs_its_next_pass_at_once_not_at_the_interval():
    core = CountingCore()
    loop = ControllerLoop(core, interval=600.0)
    loop.start()
    try:
        assert wait_for_passes(core, 1, timeout=10)  # the first pass runs at start
        time.sleep(0.2)
        assert core.passes == 1  # then it waits the interval
        loop.wake()
        assert wait_for_passes(core, 2, timeout=10)  # woken: the next pass comes now, not in 10 minutes
        time.sleep(0.2)
        assert core.passes == 2  # one wake, one pass: the wake is consumed
    finally:
        loop.stop()
        loop.thread.join(timeout=10)
    assert not loop.thread.is_alive()  # stop wakes the wait too
