"""Interruption notices: the providers' windows as data, and what orch does when one arrives.

On a notice orch cordons the node (no new gang lands on it) and asks every job attempt holding it to
checkpoint and stop by the deadline. The controller then restarts the job from that checkpoint like
after a loss, so it may use a hot spare, and no step is lost when the save commits in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import yaml

from orchestrator.control.directives import CHECKPOINT_STOP
from orchestrator.state.store import StateStore

WINDOWS_FILE = Path(__file__).with_name("notice_windows.yaml")
NOTICE_CORDON_PREFIX = "notice:"  # the controller recognises a node taken away with notice by this


@dataclass(frozen=True)
class Signal:
    kind: str  # interruption | rebalance | maintenance
    taint: str | None = None
    event_reason: str | None = None


@dataclass(frozen=True)
class ProviderNotices:
    provider: str
    notice_seconds: int
    signals: tuple[Signal, ...]


@lru_cache(maxsize=1)
def notice_windows() -> dict[str, ProviderNotices]:
    data = yaml.safe_load(WINDOWS_FILE.read_text())
    return {name: ProviderNotices(name, int(entry["notice_seconds"]), tuple(Signal(**s) for s in entry["signals"]))
            for name, entry in data.items()}


def notice_seconds(provider: str) -> int:
    try:
        return notice_windows()[provider].notice_seconds
    except KeyError:
        raise KeyError(f"no notice window for provider '{provider}'; known: {', '.join(notice_windows())}") from None


def holding(store: StateStore, node: str) -> list[dict]:
    from orchestrator.control.node_ops import jobs_on

    return jobs_on(store, node)


def handle_notice(store: StateStore, node: str, deadline: float, why: str, actor: str,
                  ask_runner: Callable[[dict, str, float], None]) -> list[str]:
    """Cordon ``node`` and tell every attempt on it to checkpoint and stop by ``deadline``."""
    store.set_cordon(node, True, f"{NOTICE_CORDON_PREFIX} {why}", actor)
    store.add_event("node.notice", f"{node}: {why}; goes in {deadline - store.clock.now():.0f} s",
                    data={"node": node, "deadline": deadline}, actor=actor)
    done = []
    for job in holding(store, node):
        store.update_job(job["id"], preempt_requested=True)
        ask_runner(job, CHECKPOINT_STOP, deadline)
        done.append(f"{job['id']}: told to checkpoint within {deadline - store.clock.now():.0f} s")
    return done


def taken_with_notice(store: StateStore, job: dict) -> str | None:
    """The job's node that is going away with notice, if any."""
    cordons = store.cordoned_nodes()
    for name in job.get("assignment") or []:
        if (cordons.get(name) or "").startswith(NOTICE_CORDON_PREFIX):
            return name
    return None
