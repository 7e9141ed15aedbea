"""The embedded Ray cluster: several real raylets on this machine, each a virtual node."""

from __future__ import annotations

# Ray starts worker processes at nice 15 so that its own daemons win any contention. On a training
# node the workers are the workload: run them at normal priority (measured in bench/RESULTS.md).
EMBEDDED_RAY_ENV = {"RAY_worker_niceness": "0"}
