"""The controller away from the Ray head: `orch controller --in-process`.

The controller loop runs in this process (a Kubernetes Deployment's pod, or any machine that can
reach the cluster and the state database), connected to the Ray cluster as a driver. Any number of
replicas may run: they elect one leader through the state store's lease (``state.lease``); the
others wait. When the Ray head goes away, passes fail (recorded once, not once a pass) and this
process reconnects with backoff until the head is back; the lease is kept meanwhile only if the
state database still answers, so a replica that can reach both takes over from one that cannot.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from orchestrator.cluster.embedded import NAMESPACE, EmbeddedCluster
from orchestrator.cluster.provider import EmbeddedNodeProvider, RayNodeProvider
from orchestrator.control.controller import ControllerCore, ControllerLoop
from orchestrator.control.launcher import RayLauncher
from orchestrator.state.engine import redact
from orchestrator.state.lease import Lease
from orchestrator.state.store import StateStore

log = logging.getLogger(__name__)


class RayConnection:
    """A driver connection to a Ray cluster that is re-established after the head returns."""

    def __init__(self, address: str):
        self.address = address
        self.reconnects = 0

    def connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")

    def healthy(self) -> bool:
        import ray

        try:
            return ray.is_initialized() and bool(ray.nodes())
        except Exception:  # any failure to reach the GCS: reconnect
            return False

    def reconnect(self, stop: threading.Event, max_wait_s: float = 10.0) -> None:
        """Drop the connection and connect again, backing off from 0.5 s to ``max_wait_s``."""
        import ray

        delay = 0.5
        while not stop.is_set():
            try:
                ray.shutdown()
                self.connect()
                if self.healthy():
                    self.reconnects += 1
                    return
            except Exception as exc:  # the head is still away: wait and try again
                log.warning("Ray cluster %s unreachable (%s); retrying in %.1f s", self.address, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, max_wait_s)


def build_loop(state_url: str, home: Path, interval: float, ttl_s: float, holder: str | None = None):
    """The elected controller loop over this process's Ray connection."""
    store = StateStore(state_url)
    embedded = EmbeddedCluster(home).load() is not None
    provider = EmbeddedNodeProvider(store, home) if embedded else RayNodeProvider(store)
    core = ControllerCore(store, provider, RayLauncher(state_url, str(home)))
    lease = Lease(store, holder=holder, ttl_s=ttl_s)
    return ControllerLoop(core, interval, lease=lease)


def run_in_process(
    address: str,
    state_url: str,
    home: Path,
    *,
    interval: float = 1.0,
    ttl_s: float = 15.0,
    check_every: float = 2.0,
    stop: threading.Event | None = None,
    holder: str | None = None,
    report=print,
) -> None:
    """Run the elected controller here until ``stop`` is set, reconnecting to Ray after head loss."""
    stop = stop or threading.Event()
    ray_conn = RayConnection(address)
    ray_conn.connect()
    loop = build_loop(state_url, home, interval, ttl_s, holder)
    loop.start()
    report(
        f"orch controller: in this process as {loop.lease.holder}, Ray at {address}, state store {redact(state_url)}"
    )
    leading = None
    try:
        while not stop.wait(check_every):
            if not ray_conn.healthy():
                report("orch controller: the Ray head is unreachable; reconnecting")
                ray_conn.reconnect(stop)
                report(f"orch controller: reconnected to {address}")
            stats = loop.stats()
            if stats["leading"] != leading:
                leading = stats["leading"]
                report(f"orch controller: {'leading' if leading else 'standing by (another controller leads)'}")
    finally:
        loop.stop(release=True)
