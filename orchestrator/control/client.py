"""What the CLI and the dashboard call: the control plane seen from outside the cluster.

Reads come straight from the state store (so `orch list` works even while the cluster is down);
requests (submit, cancel) are written to the store as desired state, and the controller in the
cluster acts on them. The embedded cluster is started on demand unless an address is given
(``--address`` / ``RAY_ADDRESS``); a remote cluster needs a shared state URL (``ORCH_STATE_URL``,
e.g. PostgreSQL) that its controller also uses.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from orchestrator.cluster.embedded import KEEPER, NAMESPACE, EmbeddedCluster
from orchestrator.cluster.placement import JobView, capacity_problem
from orchestrator.cluster.provider import RayNodeProvider
from orchestrator.control.controller import allowed_pools
from orchestrator.control.job_ops import cancel_job
from orchestrator.control.rows import job_row
from orchestrator.errors import FieldProblem, OrchError, PlanError
from orchestrator.paths import STATE_URL_ENV, orch_home
from orchestrator.plan.planner import Plan, make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import EventRecord, StateStore
from orchestrator.train.support import check_runnable

# how long a connect waits for the keeper's controller: its driver imports Ray and connects (seconds on
# an idle machine; a first start on 2 busy cores takes longer)
KEEPER_WAIT_S = 90.0


class NotConnected(OrchError):
    pass


class ControlPlane:
    def __init__(self, home: Path | None = None, address: str | None = None, state_url: str | None = None):
        self.home = Path(home) if home else orch_home()
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.state_url = state_url or os.environ.get(STATE_URL_ENV) or f"sqlite:///{self.home / 'state.db'}"
        self._store: StateStore | None = None
        self.cluster = EmbeddedCluster(self.home)

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self.state_url)
        return self._store

    # ------------------------------------------------------------------ cluster

    def connect(self, start: bool = True) -> None:
        """Connect this process to the cluster (starting the embedded one if allowed) and make sure
        the controller runs."""
        address, embedded = self.address, self.address is None
        if embedded:  # start the cluster and set its auth before Ray is imported here
            info = self.cluster.up() if start else self.cluster.running()
            if info is None:
                raise NotConnected("the embedded cluster is not running; start it with 'orch up'")
            os.environ.update(self.cluster.env(info))
            address = info.address
        import ray

        from orchestrator.control.service import ensure_controller

        if ray.is_initialized():
            return
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        # no wait for the worker nodes: 'ray start' returns once a node is registered, and after a node
        # loss the cluster legitimately has fewer
        if not embedded or not self._kept(address):
            ensure_controller(self.state_url, str(self.home))

    def _kept(self, address: str, wait_s: float = KEEPER_WAIT_S) -> bool:
        """The embedded cluster's controller, owned by its keeper (``control/keeper.py``), which is started
        here unless it runs; whether the controller is there within ``wait_s``. If not, this process
        creates it, and its warm processes end with this process's Ray job."""
        from orchestrator.control.service import get_controller

        argv = [sys.executable, "-m", "orchestrator.control.keeper", "--address", address, "--home", str(self.home)]
        # unless it runs (two `orch` commands at once start one); the state URL may hold a database
        # password: in the environment, not on the command line
        self.cluster.start_process(KEEPER, argv, env={STATE_URL_ENV: self.state_url})
        deadline = time.time() + wait_s
        while get_controller() is None:
            if time.time() > deadline or not self.cluster.process_running(KEEPER):
                return False
            time.sleep(0.2)
        return True

    # ------------------------------------------------------------------ jobs

    def prepare(self, file: str, profile: str | None, overrides: list[str]) -> tuple[Plan, dict]:
        spec = load_spec(file, profile, overrides)
        plan = make_plan(spec)
        source = {"file": str(file), "profile": profile, "overrides": list(overrides)}
        return plan, job_row(self.store.new_job_id(spec.name), plan, source)

    def submit(
        self,
        file: str,
        profile: str | None = None,
        overrides: list[str] | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> dict:
        """Validate, plan, check the runtime can run it and the gang can ever fit, then enqueue. Nothing
        is written on error. ``announce(text)`` hears about a cluster start-up before it begins."""
        plan, row = self.prepare(file, profile, overrides or [])
        check_runnable(plan.spec)  # planned but not executed (fp8, TP, DualPipe): refused before a cluster starts
        if announce is not None:
            announce(self._connect_note())
        self.connect(start=True)
        nodes = RayNodeProvider(self.store).nodes()
        gang = JobView(
            row["id"],
            row["team"],
            row["priority"],
            0.0,
            plan.mesh.nodes,
            plan.mesh.devices_per_node,
            allowed_pools(plan.spec),
        )
        problem = capacity_problem(gang, nodes)
        if problem:
            raise PlanError(
                [
                    FieldProblem(
                        "resources",
                        f"{problem}: the plan needs {plan.mesh.world_size} devices "
                        f"({plan.mesh.nodes} nodes x {plan.mesh.devices_per_node})",
                        fix="use a cluster that large (--address), or try the miniature: --profile local",
                    )
                ],
                row["name"],
            )
        self.store.insert_job(
            row,
            [
                EventRecord(
                    "job.submitted",
                    f"{row['id']}: submitted ({plan.mesh.world_size} devices, {plan.total_steps} steps)",
                    {"file": str(file), "profile": profile},
                    actor=_user(),
                )
            ],
        )
        return self.store.get_job(row["id"])

    def _connect_note(self) -> str:
        if self.address is not None:
            return f"cluster: connecting to {self.address}"
        if self.cluster.running() is not None:
            return "cluster: the embedded cluster is up; connecting"
        return f"cluster: starting the embedded Ray cluster and controller (ORCH_HOME {self.home})"

    def cancel(self, job_id: str) -> dict:
        return cancel_job(self.store, job_id, _user())

    def log_path(self, job_id: str) -> Path:
        return self.home / "jobs" / job_id / "job.log"


def _user() -> str:
    return f"user:{os.environ.get('USER', 'unknown')}"
