"""The embedded cluster's controller keeper: the Ray driver that owns orch's controller actor and lives
as long as the cluster.

Why: Ray ties every worker process it prestarts to a Ray job, and orch asks for them in the controller
actor's job, which is the job of the driver that created the actor. When that driver exits, the job is
finished and the raylet ends the job's idle prestarted processes and starts none for it any more. A probe
on Ray 2.60 here: a process prestarted from a detached actor was gone at the first look after the driver
that created the actor exited; a prestart asked afterwards by the same actor was accepted and started
nothing. `orch up` used to create the controller and exit at once, so on the embedded cluster the warm
pool and every restart's warm processes (``train/warm_pool.py``, ``warm_workers.py``,
``warm_control.py``) were gone before the first job. This process creates the controller, or replaces
one whose job has finished, and then only waits; it runs in a session of the cluster's own, so
`orch down` stops it with the raylets (``cluster/embedded.py: KEEPER``).

On Kubernetes and with `orch controller --in-process` the controller's driver is the long-lived
`orch controller` process itself: no keeper.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

import ray

from orchestrator.control.controller_handle import NAMESPACE
from orchestrator.control.service import ensure_controller, get_controller
from orchestrator.paths import STATE_URL_ENV

log = logging.getLogger(__name__)


def adopt_controller(state_url: str, home: str):
    """The controller actor, in this driver's job: created if absent; if it was created by a driver
    whose job has finished, replaced (the controller keeps nothing it cannot rebuild from the state
    store; a restart of it is what `test_killing_the_controller_loses_nothing` covers)."""
    existing = get_controller()
    if existing is not None:
        job = ray.get(existing.ping.remote(), timeout=60).get("job")
        finished = {j["JobID"] for j in ray._private.state.jobs() if j["IsDead"]}
        if job in finished:
            log.warning("the controller's Ray job %s has finished: starting it again in this one", job)
            ray.kill(existing, no_restart=True)
            deadline = time.time() + 60
            while get_controller() is not None and time.time() < deadline:  # its name is freed when it is dead
                time.sleep(0.2)
    return ensure_controller(state_url, home)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.control.keeper")
    parser.add_argument("--address", required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # in the environment, not on the command line, which any local user can read: it may hold a
    # database password (a PostgreSQL state store)
    state_url = os.environ.get(STATE_URL_ENV)
    if not state_url:
        parser.error(f"{STATE_URL_ENV} is not set: the keeper is started by orch with the state store's URL there")
    ray.init(address=args.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    controller = adopt_controller(state_url, args.home)
    pid = ray.get(controller.ping.remote(), timeout=120).get("pid")
    log.info("controller (pid %s) kept in Ray job %s", pid, ray.get_runtime_context().get_job_id())
    threading.Event().wait()  # the controller's job lives while this driver does: `orch down` ends it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
