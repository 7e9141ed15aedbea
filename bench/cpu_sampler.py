"""CPU seconds and context switches of each process of this one's tree between two moments, sampled once
a second.

Why: on a shared 2-core machine a launcher's overhead is CPU its own processes take from the
training (Ray's daemons and helper actors) or CPU the workers themselves spend per step; per-process
CPU over the steady state tells the two apart where step times alone cannot. Context switches count
how often a process woke: on 2 cores busy with 4 ranks, each wake-up of another process displaces a
rank. Only this process and its descendants count (a local Ray cluster's GCS, raylet, agents and
workers, a torchrun and its ranks): other users' processes on a shared machine are not the launcher's.
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
                    switches = proc.num_ctx_switches()
                    snapshot[proc.pid] = (cmd, times.user + times.system, switches.voluntary + switches.involuntary)
                except psutil.Error:
                    continue
            self.samples.append((time.time(), snapshot))
            self._stop.wait(self.period_s)

    def between(self, start: float, end: float) -> tuple[float, dict[int, tuple[str, float, int]]]:
        """(seconds covered, {pid: (command, CPU seconds, context switches)}) for processes alive at both
        samples."""
        a = min(self.samples, key=lambda s: abs(s[0] - start))
        b = min(self.samples, key=lambda s: abs(s[0] - end))
        spent = {
            pid: (cmd, cpu - a[1][pid][1], switches - a[1][pid][2])
            for pid, (cmd, cpu, switches) in b[1].items()
            if pid in a[1]
        }
        return b[0] - a[0], spent
