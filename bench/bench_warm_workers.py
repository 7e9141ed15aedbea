"""What the warm path (``orchestrator/train/warm_workers.py``) costs whether or not a restart comes.

1. One warm worker's preload: the CPU seconds and resident memory of a fresh process that runs
   ``warm_workers.preload`` (the imports every warm worker makes as it starts), median of 3; the same
   for a warm control process of the head (``warm_control.preload``).
2. Whether repeated prestarts pile up on a spare: a one-node Ray cluster (2 CPUs, labelled as a
   spare) is asked three times, from a task with a job's warm runtime environment, for 3 warm workers,
   side by side: the raylet's request as such (``prestart``), and what a job's rank 0 calls at every
   attempt (``prestart_for_next_attempt``, which asks a spare once per keep-alive); the worker
   processes are counted once they have settled after each request.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import psutil

from bench.harness import Section

COMMAND = "python -m bench.run_all warm_workers  (bench/bench_warm_workers.py)"
PRELOAD = (
    "import json, resource, psutil; from {module} import preload; preload(); "
    "r = resource.getrusage(resource.RUSAGE_SELF); "
    "print(json.dumps({{'cpu_s': r.ru_utime + r.ru_stime, 'rss_mib': psutil.Process().memory_info().rss / 2**20}}))"
)
REQUESTS, PER_REQUEST = 3, 3


def preload_cost(module: str) -> dict:
    """The setup hook ``module.preload`` in a fresh process: its CPU seconds and resident memory, median of 3."""
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", PRELOAD.format(module=module)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "DS_ACCELERATOR": "cpu"},
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in ("cpu_s", "rss_mib")}


def _workers() -> int:
    count = 0
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "default_worker.py" in line or line.startswith("ray::"):  # Ray renames its workers ray::IDLE etc.
            count += 1
    return count


def _settled(previous: int, timeout_s: float = 90.0) -> int:
    """The worker count once it has not changed for 10 s."""
    deadline, last, since = time.time() + timeout_s, _workers(), time.time()
    while time.time() < deadline:
        time.sleep(1.0)
        now = _workers()
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= 10.0 and now != previous:
            break
    return last


def pile_up(through_orch: bool) -> list[int]:
    """Worker processes on a spare node before and after each request: the raylet's ``PrestartWorkers``
    sent as such (``prestart``), or through what a job's rank 0 calls at every attempt
    (``prestart_for_next_attempt``, which asks a spare once per keep-alive)."""
    import ray

    from orchestrator.train.warm_workers import prestart, prestart_for_next_attempt, worker_runtime_env

    ray.init(num_cpus=2, include_dashboard=False, labels={"orch-node": "spare-1", "orch-pool-kind": "spare"})
    try:

        @ray.remote
        def ask() -> list[str]:
            if through_orch:
                return prestart_for_next_attempt([], PER_REQUEST)
            return prestart({"spare-1": PER_REQUEST}, ray.get_runtime_context().get_runtime_env_string())

        counts = [_settled(-1)]
        for attempt in range(REQUESTS):
            asked = ray.get(ask.options(runtime_env=worker_runtime_env()).remote())
            assert asked == (["spare-1"] if attempt == 0 or not through_orch else []), asked
            counts.append(_settled(counts[-1], timeout_s=90.0 if asked else 20.0))
        return counts
    finally:
        ray.shutdown()


def _verdict(raw: list[int], orch: list[int]) -> str:
    piled = all(later > earlier for earlier, later in zip(raw[1:], raw[2:]))
    held = orch[2:] == [orch[1]] * (len(orch) - 2)
    return (
        "Sent as such, each request added workers to those the raylet already held for the same job and runtime "
        "environment (they live for the keep-alive, 6 h). "
        if piled
        else "Sent as such, requests did not pile up. "
    ) + (
        "Through `prestart_for_next_attempt` the spare was asked once and later attempts left it as it was."
        if held
        else "Through `prestart_for_next_attempt` the count still changed after the first request."
    )


def run() -> Section:
    cost = preload_cost("orchestrator.train.warm_workers")
    control = preload_cost("orchestrator.train.warm_control")
    raw, orch = pile_up(through_orch=False), pile_up(through_orch=True)
    body = [
        "| what | measured |",
        "|---|---|",
        f"| one warm worker's preload (torch, DeepSpeed, Ray Train, orch's trainer): CPU | {cost['cpu_s']:.1f} s |",
        f"| the same process's resident memory after it | {cost['rss_mib']:.0f} MiB |",
        "| one warm control process's preload (Ray Train's controller and torch: `warm_control.preload`, six "
        f"per head node): CPU | {control['cpu_s']:.1f} s |",
        f"| the same process's resident memory after it | {control['rss_mib']:.0f} MiB |",
        f"| Ray worker processes on a spare: before, then after each of {REQUESTS} requests for "
        f"{PER_REQUEST} warm workers, `PrestartWorkers` as such | {' -> '.join(str(c) for c in raw)} |",
        f"| the same, through `prestart_for_next_attempt` (a job's rank 0 at each attempt) | "
        f"{' -> '.join(str(c) for c in orch)} |",
        "",
        "Median of 3 fresh processes for the preload. Each row is a fresh one-node Ray cluster (2 CPUs, labelled "
        "as a spare). The worker processes are counted once the count has not changed for 10 s after a request "
        "(Ray's own idle workers and the task that sends the requests, in the warm runtime environment). "
        + _verdict(raw, orch),
    ]
    return Section("Warm workers: what they cost", COMMAND, body)


if __name__ == "__main__":
    print(run().render())
