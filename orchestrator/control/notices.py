"""What orch does when a node is about to be taken away: the control-plane side of interruption
notices (``cluster/notices.py`` holds the providers' windows as data).

On a notice orch cordons the node (no new gang lands on it) and asks every job attempt holding it to
checkpoint and stop by the deadline. The controller then restarts the job from that checkpoint like
after a loss, so it may use a hot spare, and no step is lost when the save commits in time. The
embedded cluster's drill, the Kubernetes signal watch and the simulator all come through here.
"""

from __future__ import annotations

from typing import Callable

from orchestrator.cluster.kubernetes import NodeSignal
from orchestrator.cluster.notices import NOTICE_CORDON_PREFIX, ProviderNotices
from orchestrator.lifecycle import Directive
from orchestrator.state.records import JobRecord
from orchestrator.state.store import StateStore

AskRunner = Callable[[dict, str, float], None]  # (job, directive, deadline): reaches the attempt's runner


def handle_notice(
    store: StateStore, node: str, deadline: float, why: str, actor: str, ask_runner: AskRunner
) -> list[str]:
    """Cordon ``node`` (recording when it goes) and tell every attempt on it to checkpoint and stop by
    ``deadline``."""
    store.set_cordon(node, True, f"{NOTICE_CORDON_PREFIX} {why}", actor, notice_deadline=deadline)
    store.add_event(
        "node.notice",
        f"{node}: {why}; goes in {deadline - store.clock.now():.0f} s",
        data={"node": node, "deadline": deadline},
        actor=actor,
    )
    done = []
    for job in store.holding_jobs(node):
        left = deadline - store.clock.now()
        store.request_preempt(
            job["id"],
            f"{node} goes in {left:.0f} s ({why}): checkpoint and stop",
            actor,
            deadline=deadline,
            data={"node": node},
        )
        ask_runner(job, Directive.CHECKPOINT_STOP, deadline)
        done.append(f"{job['id']}: told to checkpoint within {left:.0f} s")
    return done


def taken_with_notice(store: StateStore, job: JobRecord) -> str | None:
    """The job's node that is going away with notice, if any."""
    noticed = store.noticed_nodes()
    return next((name for name in job.assignment or [] if name in noticed), None)


class InterruptionResponder:
    """What orch does with a Kubernetes node signal: a notice cordons and checkpoints (once per node),
    a rebalance recommendation only cordons, ``NotReady`` is recorded (the runner's loss drives the
    restart)."""

    def __init__(self, store: StateStore, notices: ProviderNotices, ask_runner: AskRunner, actor: str = "kubernetes"):
        self.store, self.notices, self.ask_runner, self.actor = store, notices, ask_runner, actor
        self.handled: set[tuple[str, str]] = set()

    def __call__(self, signal: NodeSignal) -> list[str]:
        key = (signal.node, signal.kind)
        if key in self.handled:
            return []
        self.handled.add(key)
        if signal.kind == "interruption":
            deadline = self.store.clock.now() + self.notices.notice_seconds
            return handle_notice(
                self.store,
                signal.node,
                deadline,
                f"{self.notices.provider} {signal.source}",
                self.actor,
                self.ask_runner,
            )
        if signal.kind in ("rebalance", "maintenance"):
            self.store.set_cordon(signal.node, True, f"{signal.kind}: {signal.source}", self.actor)
            return [f"{signal.node}: cordoned ({signal.source})"]
        self.store.add_event(
            "node.lost", f"{signal.node}: {signal.source}", data={"node": signal.node}, actor=self.actor
        )
        return [f"{signal.node}: not ready"]
