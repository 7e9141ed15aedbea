"""The in-memory tier of a checkpoint: copies of each rank's shard in host memory on other nodes.

Why: a replacement rank restores over the network from a peer's memory instead of from object
storage (seconds saved at every restart, and no load on the bucket when thousands of ranks restart
at once). Object storage stays the durable copy and the commit point: a copy in memory is used only
when it is byte-for-byte the shard the committed manifest names (same size and sha256), so a stale,
partial or uncommitted copy can never be restored. When no live holder has the copy (the peer died
together with the node it covered), the rank reads object storage as before.

This module is the seam only (no Ray): ``train/peer_memory.py`` implements it with Ray actors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

MEMORY, OBJECT_STORE = "memory", "object store"  # where a rank's restored shard came from


@runtime_checkable
class ShardCopies(Protocol):
    def keep(self, step: int, rank: int, attempt: int, payload: bytes, sha256: str) -> None:
        """Hold ``payload`` (rank ``rank``'s encoded shard of ``step``) in host memory off this node.
        Best effort and never raises: a failure leaves the object store copy as the only one."""

    def fetch(self, step: int, rank: int, sha256: str) -> bytes | None:
        """The copy of ``rank``'s shard of ``step`` whose sha256 is ``sha256``, or None when no live
        holder has it. Never raises: an unreachable holder is a miss."""
