"""The in-memory tier of a checkpoint: copies of each rank's shard in host memory on other nodes.

Why: a replacement rank restores over the network from a peer's memory instead of from object
storage (seconds saved at every restart, and no load on the bucket when thousands of ranks restart
at once). Object storage stays the durable copy. A copy in memory is used only when it is
byte-for-byte the shard a manifest names (same size and sha256), so a stale, partial or foreign copy
can never be restored. When no live holder has the copy (the peer died together with the node it
covered), the rank reads object storage as before.

Committed in memory: at 2,048 ranks a checkpoint's upload takes about 96 s (9.56 TB at 100 GB/s),
and a failure in that time used to lose the work back to the checkpoint before it. So once every
rank's copy is held on its own node and its buddy's (``kept``), rank 0 writes a memory manifest
(``CheckpointStore.commit_in_memory``: the shards' sha256, no bytes), seconds after the step; resume
tries it before the newest durable checkpoint, and takes it only when every rank finds its copy.

This module is the seam only (no Ray): ``train/peer_memory.py`` implements it with Ray actors.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

MEMORY, OBJECT_STORE = "memory", "object store"  # where a rank's restored shard came from


@runtime_checkable
class ShardCopies(Protocol):
    def keep(self, step: int, rank: int, attempt: int, payload: bytes, sha256: str) -> None:
        """Hold ``payload`` (rank ``rank``'s encoded shard of ``step``) in host memory off this node.
        Best effort and never raises: a failure leaves the object store copy as the only one."""

    def fetch(self, step: int, rank: int, sha256: str) -> bytes | None:
        """The copy of ``rank``'s shard of ``step`` whose sha256 is ``sha256``, or None when no live
        holder has it. Never raises: an unreachable holder is a miss."""

    def kept(self, step: int, attempt: int) -> dict[int, tuple[str, int]]:
        """{rank: (sha256, size)} of the ranks whose copy of ``step`` written by ``attempt`` is held
        wherever a rank keeps its copies (so it outlives the loss of any one node). Never raises."""


def buddy_of(node: str, assignment: list[str]) -> str | None:
    """The next node of the gang in a ring: where ``node``'s ranks keep their second copy."""
    nodes = list(dict.fromkeys(assignment))
    if node not in nodes or len(nodes) < 2:
        return None
    return nodes[(nodes.index(node) + 1) % len(nodes)]


def restorable_from_peers(previous: list[str], new: list[str], alive: Callable[[str], bool]) -> bool:
    """Whether a gang on ``new`` can read every copy a gang on ``previous`` kept: each of its nodes'
    copies are on that node and its buddy, and a rank reads the holders of its own gang's nodes only
    (``train/peer_memory.py``), so one of the two must be alive and in ``new``. (The simulator asks it;
    the runtime finds out by looking.)"""
    nodes = list(dict.fromkeys(previous))
    for node in nodes:
        holders = {node, buddy_of(node, nodes) or node}
        if not any(h in new and alive(h) for h in holders):
            return False
    return bool(nodes)
