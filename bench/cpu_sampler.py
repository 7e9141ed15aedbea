"""CPU seconds each process of this one's tree spent between two moments, sampled once a second.

Why: on a shared 2-core machine a launcher's overhead is CPU its own processes take from the
training (Ray's daemons and helper actors) or CPU the workers themselves spend per step; per-process
CPU over the steady state tells the two apart where step times alone cannot. Only this process and
its descendants count (a local Ray cluster's GCS, raylet, agents and workers, a torchrun and its
ranks): other users' processes on a shared machine are not the launcher's.
"""

from __future__ import annotations

import threading
import time

import psutil


class CpuSampler:
    def __init__(self, period_s: float = 1.0):
        self.period_s, self.samples = period_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            snapshot = {}
            me = psutil.Process()
            for proc in [me, *me.children(recursive=True)]:
                try:
                    times, cmd = proc.cpu_times(), " ".join(proc.cmdline()) or proc.name()
                    snapshot[proc.pid] = (cmd, times.user + times.system)
                except psutil.Error:
                    continue
            self.samples.append((time.time(), snapshot))
            self._stop.wait(self.period_s)

    def between(self, start: float, end: float) -> tuple[float, dict[int, tuple[str, float]]]:
        """(seconds covered, {pid: (command, CPU seconds)}) for processes alive at both samples."""
        a = min(self.samples, key=lambda s: abs(s[0] - start))
        b = min(self.samples, key=lambda s: abs(s[0] - end))
        spent = {pid: (cmd, cpu - a[1][pid][1]) for pid, (cmd, cpu) in b[1].items() if pid in a[1]}
        return b[0] - a[0], spent
