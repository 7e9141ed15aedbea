"""Checkpoint shards in peer memory: one holder actor per node keeps copies of other ranks' shards.

After each upload, a rank sends its encoded shard to the holder on its own node and to the holder
on its buddy node (the next node of the gang's assignment, in a ring). When a node is lost, the
replacement ranks find their shards on the buddy that survived, the surviving ranks on their own
node, so a restart reads no object storage at all; when the buddy died too, the rank falls back to
object storage (``checkpoint/session.py`` decides, checking every copy against the committed
manifest's sha256). A holder keeps the two newest steps per (job, rank): the newest may not commit.
Rank 0 asks the gang's holders which ranks' copies of a step are held (``kept``) to commit the step
in memory before its upload ends (``checkpoint/memory.py``).

Holders are detached named actors (``orch-shards-v2:<node>``, namespace ``orch``) pinned to their node
by its ``orch-node`` label; they die with their node (that loss is what the fallback covers). Ray
moves the bytes (its object store, node to node). A restoring rank asks its own node's holder, then
those of the gang's other nodes: a lost node's buddy is a survivor still in the gang, unless it died
too (then object storage).
"""

from __future__ import annotations

import logging

import ray

from orchestrator.checkpoint.memory import buddy_of
from orchestrator.train.warm_workers import HOOK_ENV

log = logging.getLogger(__name__)

# versioned: holders are detached and outlive an upgrade; a holder of another version is never asked
# (v2: copies carry their attempt, ``kept``)
HOLDER_PREFIX = "orch-shards-v2:"
NAMESPACE = "orch"
KEEP_STEPS = 2
TIMEOUT_S = 10.0
# What a holder that cannot be reached raises: its node is gone or going; a miss, not an error.
_GONE = (
    ray.exceptions.RayActorError,
    ray.exceptions.GetTimeoutError,
    ray.exceptions.ActorUnavailableError,
    ray.exceptions.RaySystemError,
)


@ray.remote(num_cpus=0, max_concurrency=16)
class ShardHolder:
    """Host memory on one node: {(job, rank): {step: (sha256, bytes, attempt)}}, the two newest steps each."""

    def __init__(self, node: str):
        self.node = node
        self.shards: dict[tuple[str, int], dict[int, tuple[str, bytes, int]]] = {}

    def put(self, job: str, rank: int, step: int, sha256: str, payload: bytes, attempt: int = 0) -> int:
        steps = self.shards.setdefault((job, rank), {})
        steps[step] = (sha256, payload, attempt)
        for old in sorted(steps)[:-KEEP_STEPS]:
            del steps[old]
        return len(payload)

    def get(self, job: str, rank: int, step: int, sha256: str) -> bytes | None:
        held = self.shards.get((job, rank), {}).get(step)
        return held[1] if held is not None and held[0] == sha256 else None

    def kept(self, job: str, step: int, attempt: int) -> dict[int, tuple[str, int]]:
        """{rank: (sha256, size)} of the copies of ``step`` written by ``attempt`` held here."""
        out = {}
        for (held_job, rank), steps in self.shards.items():
            held = steps.get(step)
            if held_job == job and held is not None and held[2] == attempt:
                out[rank] = (held[0], len(held[1]))
        return out

    def forget(self, job: str) -> None:
        self.shards = {key: steps for key, steps in self.shards.items() if key[0] != job}

    def held(self) -> dict:
        """What this holder keeps, for tests and `ray list actors` debugging: {job: {rank: [steps]}}."""
        out: dict = {}
        for (job, rank), steps in self.shards.items():
            out.setdefault(job, {})[rank] = sorted(steps)
        return out


def holder(node: str):
    """The holder on ``node``, started there if it is not running (its node must be alive).

    Its runtime environment clears the warm workers' setup hook: a rank creates it, and an actor takes
    its creator's runtime environment, so it used to start in one of the warm worker processes prestarted
    for the next attempt (``warm_workers.py``), leaving a rank of that attempt cold (bench_recovery:
    3 of 4 ranks warm), and imported torch and DeepSpeed it never uses."""
    return ShardHolder.options(
        name=HOLDER_PREFIX + node,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=0,
        label_selector={"orch-node": node},
        runtime_env={"env_vars": {HOOK_ENV: ""}},  # Ray runs no hook for an empty value (default_worker.py)
    ).remote(node)


def existing_holder(node: str):
    """The running holder on ``node``, or None (never starts one: a restore must not wait for that)."""
    try:
        return ray.get_actor(HOLDER_PREFIX + node, namespace=NAMESPACE)
    except ValueError:
        return None


def forget_everywhere(job: str) -> int:
    """Every live holder frees ``job``'s copies (the controller, once the job is over); the holders
    asked. Fire and forget: a holder that is gone holds nothing."""
    names = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == NAMESPACE and actor["name"].startswith(HOLDER_PREFIX)
    ]
    for name in names:
        handle = existing_holder(name[len(HOLDER_PREFIX) :])
        if handle is not None:
            handle.forget.remote(job)
    return len(names)


class PeerCopies:
    """``checkpoint.memory.ShardCopies`` over the holders: this node's and the buddy's."""

    def __init__(self, job: str, node: str, assignment: list[str]):
        self.job, self.node = job, node
        buddy = buddy_of(node, assignment)
        self.targets = [node] + ([buddy] if buddy else [])
        # where a restore looks: this node (a surviving rank's own copy), then the gang's other nodes
        # (a lost node's buddy is, unless it died too, a survivor that is still in the gang)
        self.sources = list(dict.fromkeys([node, *assignment]))
        self._holders: dict = {}  # node -> holder handle, for ``kept``'s polls

    def keep(self, step: int, rank: int, attempt: int, payload: bytes, sha256: str) -> None:
        try:
            ref = ray.put(payload)  # one copy in the object store, shared by both holders' calls
            ray.get(
                [holder(n).put.remote(self.job, rank, step, sha256, ref, attempt) for n in self.targets],
                timeout=TIMEOUT_S,
            )
        except Exception as exc:  # noqa: BLE001 - the tier never fails a save; object storage follows
            log.warning(
                "rank %s: step %s kept in peer memory on fewer nodes than %s: %s", rank, step, self.targets, exc
            )

    def fetch(self, step: int, rank: int, sha256: str) -> bytes | None:
        for node in self.sources:
            handle = existing_holder(node)
            if handle is None:
                continue
            try:
                payload = ray.get(handle.get.remote(self.job, rank, step, sha256), timeout=TIMEOUT_S)
            except _GONE:
                continue
            except Exception as exc:  # noqa: BLE001 - a miss, never an error: object storage follows
                log.warning("rank %s: the holder on %s failed: %s", rank, node, exc)
                continue
            if payload is not None:
                return payload
        return None

    def kept(self, step: int, attempt: int) -> dict[int, tuple[str, int]]:
        """{rank: (sha256, size)} for the ranks whose copy of ``step`` by ``attempt`` is held, with the
        same bytes, on as many live holders as a rank keeps copies (its node and its buddy's): a copy
        on one node alone would not outlive that node. A holder that cannot be reached counts none.
        Rank 0 polls this until every rank is in: the holders are asked at once, their handles kept."""
        asked = {}
        for node in self.sources:
            handle = self._holders.get(node) or existing_holder(node)
            if handle is not None:
                self._holders[node] = handle
                asked[node] = handle.kept.remote(self.job, step, attempt)
        found: dict[int, tuple[str, int]] = {}
        count: dict[int, int] = {}
        for node, ref in asked.items():
            try:
                held = ray.get(ref, timeout=TIMEOUT_S)
            except _GONE:
                self._holders.pop(node, None)
                continue
            except Exception as exc:  # noqa: BLE001 - counts none: the step is left to its upload
                log.warning("step %s: the holder on %s failed: %s", step, node, exc)
                continue
            for rank, copy in held.items():
                if found.setdefault(rank, tuple(copy)) == tuple(copy):
                    count[rank] = count.get(rank, 0) + 1
        return {rank: copy for rank, copy in found.items() if count.get(rank, 0) >= len(self.targets)}

    def forget(self) -> None:
        """The job is over: free its copies on the gang's holders."""
        for node in self.sources:
            handle = existing_holder(node)
            if handle is not None:
                handle.forget.remote(self.job)
