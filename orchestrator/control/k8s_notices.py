"""What the deployed controller does with a node signal on Kubernetes: checkpoint, then drain.

The AWS Node Termination Handler runs cordon-only with taints (terraform/helm.tf): it marks the node
and leaves the pods alone, so orch decides the order. On an interruption notice orch (1) asks every
job attempt on the node for an emergency checkpoint by the deadline and records its own cordon
(``InterruptionResponder``), (2) cordons the Kubernetes node, (3) waits until those attempts have
stopped (checkpoint committed) or the deadline is near, (4) evicts the node's Ray pods, and (5) asks
KubeRay for a replacement worker in the same group (``workersToDelete``), which lands on another node.
A rebalance recommendation or scheduled maintenance cordons only: no new gang lands there, and the
job keeps its node until a real notice comes. ``NotReady`` is recorded; the runner's loss drives the
restart.
"""

from __future__ import annotations

import time
from typing import Callable

from orchestrator.cluster.kubernetes import KubernetesNodeProvider, NodeSignal
from orchestrator.cluster.notices import ProviderNotices
from orchestrator.control.notices import InterruptionResponder
from orchestrator.errors import OrchError
from orchestrator.lifecycle import JobState

STILL_TRAINING = frozenset({JobState.PLACING, JobState.RUNNING, JobState.CHECKPOINTING})

DRAIN_MARGIN_S = 15.0  # evict this long before the node goes, whatever the checkpoint's state


class NoticeResponder:
    def __init__(
        self,
        provider: KubernetesNodeProvider,
        notices: ProviderNotices,
        ask_runner: Callable[[dict, str, float], None],
        actor: str = "kubernetes",
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 2.0,
    ):
        self.provider, self.store, self.notices = provider, provider.store, notices
        self.first = InterruptionResponder(provider.store, notices, ask_runner, actor)
        self.actor, self.sleep, self.poll_s = actor, sleep, poll_s

    def __call__(self, signal: NodeSignal) -> list[str]:
        fresh = (signal.node, signal.kind) not in self.first.handled
        done = self.first(signal)
        if not fresh or signal.kind == "not_ready":
            return done
        self.provider.cordon(signal.node, f"{signal.kind}: {signal.source}", self.actor, record=False)
        done.append(f"{signal.node}: Kubernetes node cordoned")
        if signal.kind != "interruption":
            return done
        deadline = self.store.clock.now() + self.notices.notice_seconds
        self._wait_for_checkpoints(signal.node, deadline - DRAIN_MARGIN_S)
        for pod, group in self.provider.evict_ray_pods(signal.node, self.actor, self._grace(deadline)):
            done.append(f"{signal.node}: evicted {pod}")
            if group:
                self.provider.replace_worker(group, pod, self.actor)
                done.append(f"{pod}: replacement requested in worker group {group}")
        return done

    def _wait_for_checkpoints(self, node: str, until: float) -> None:
        """Until every attempt that held the node at the notice has stopped (its checkpoint committed:
        the job left running/checkpointing, or a new attempt began) or ``until``."""
        attempts = {job["id"]: job.get("attempt") for job in self.store.holding_jobs(node)}

        def still_running() -> bool:
            for job_id, attempt in attempts.items():
                row = self.store.get_job(job_id)
                if row and row.get("attempt") == attempt and JobState(row["state"]) in STILL_TRAINING:
                    return True
            return False

        while still_running() and self.store.clock.now() < until:
            self.sleep(self.poll_s)

    def _grace(self, deadline: float) -> int:
        return max(1, int(deadline - self.store.clock.now()))


def run_notice_loop(watch, respond: Callable[[NodeSignal], list[str]], log: Callable[[str], None] = print) -> None:
    """Feed every watched signal to the responder; an error is logged and the loop goes on."""
    for signal in watch.signals():
        try:
            for line in respond(signal):
                log(f"orch controller: {line}")
        except OrchError as exc:
            log(f"orch controller: {signal.node} {signal.kind}: {exc}")
