"""The controller as a detached, restartable Ray actor on the head node.

Ray restarts it if it dies (``max_restarts=-1``); on start it rebuilds its view from the state
store and the cluster and carries on, because everything it acts on is persisted.
"""

from __future__ import annotations

import os

import ray

from orchestrator.cluster.embedded import EmbeddedCluster
from orchestrator.cluster.provider import EmbeddedNodeProvider, RayNodeProvider
from orchestrator.control.controller import ControllerCore, ControllerLoop
from orchestrator.control.controller_handle import CONTROLLER_NAME, NAMESPACE
from orchestrator.control.launcher import RayLauncher
from orchestrator.forecast.alerts import ForecastWatch  # budget.forecast_over events
from orchestrator.state.lease import Lease
from orchestrator.state.store import StateStore


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class ControllerActor:
    def __init__(self, state_url: str, home: str, interval: float = 1.0):
        os.environ["ORCH_HOME"] = home
        self.store = StateStore(state_url)
        embedded = EmbeddedCluster(home).load() is not None  # this controller runs in orch's own local cluster
        provider = EmbeddedNodeProvider(self.store, home) if embedded else RayNodeProvider(self.store)
        self.launcher = RayLauncher(state_url, home)
        core = ControllerCore(self.store, provider, self.launcher)
        self.store.add_event("controller.started", f"controller started (pid {os.getpid()})", data={"pid": os.getpid()})
        # the same lease as controllers run outside the head (`orch controller --in-process`): only one
        # acts; a restart of this actor (same holder name) takes the lease back at once
        lease = Lease(self.store, holder=f"ray-actor:{CONTROLLER_NAME}")
        self.loop = ControllerLoop(core, interval, lease=lease)
        self.loop.start()
        self.forecasts = ForecastWatch(self.store, float(os.environ.get("ORCH_FORECAST_PERIOD_S", "600"))).start()

    def ping(self) -> dict:
        """The loop's counters, this process, its Ray job (whose end ends its warm processes: ``keeper.py``)
        and how many times it has asked for the warm pool (``train/warm_pool.py``) to the end."""
        job = ray.get_runtime_context().get_job_id()
        return {**self.loop.stats(), "pid": os.getpid(), "job": job, "pool_fills": self.launcher.fills}

    def wake(self) -> None:
        """A runner recorded its outcome: reconcile now (``ControllerLoop.wake``)."""
        self.loop.wake()


def ensure_controller(state_url: str, home: str):
    """The running controller, started if absent (idempotent)."""
    return ControllerActor.options(
        name=CONTROLLER_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources={"orch_head": 0.001},
    ).remote(state_url, home)


def get_controller():
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
