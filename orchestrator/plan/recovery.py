"""What a recovery costs the simulated run: the measured figures and the rule that scales them.

The runtime recovers from a node loss in one sequence (``bench/bench_recovery.py`` times each part):
detect (the GCS declares the raylet dead) -> replace (the scheduler places the gang on a spare, or it
waits for a new node) -> rejoin (workers started and engines built, or with warm workers only the
process groups rebuilt) -> restore (the newest committed checkpoint read back) -> first step. The
simulator follows the same sequence, with the figures measured on the embedded cluster carried to
the simulated job by these rules:

- detect: constant. The GCS health-checks every raylet on its own (period x failure threshold), so
  the time to notice a silent node does not grow with the node count; it holds for a cluster with
  the embedded cluster's health-check settings (``cluster/embedded.py: EMBEDDED_RAY_ENV``).
- replace: not a constant. A free spare is taken at once (measured 0.0 s); without one the job waits
  for a new node (``--provision-delay``): the simulated scheduler decides which.
- rejoin: constant. Every node starts its own workers and builds its engine part at the same time,
  so the measured start holds per node whatever their number. It is a lower bound at V3 scale: the
  communicators over 2,048 ranks and a full-size engine are not measured here.
- restore: bytes over bandwidth. From object storage: the whole checkpoint over the storage's
  aggregate bandwidth (``--storage-gbps``). From peer memory: every rank's shard crosses the network
  to the replaced node at the per-device bandwidth (``--peer-gbps``), then host to device
  (``--snapshot-gbps``); survivors copy from their own host memory meanwhile.
- first step: one ordinary step of the timeline (measured: the first resumed step takes one step).

``MEASURED`` is the one place the figures live: re-measuring ``bench_recovery`` is one edit here, and
``tests/unit/test_simulate_recovery.py`` fails while this table and bench/RESULTS.md disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

RESULTS_SECTION = "Recovery from a node loss"  # bench/RESULTS.md heading these figures come from


@dataclass(frozen=True)
class MeasuredRecovery:
    """One row of bench/RESULTS.md's recovery table, in seconds on the embedded cluster."""

    row: str  # the row's first cell, as RESULTS.md prints it
    commit: str  # the commit RESULTS.md says it was measured at
    detect_s: float
    replace_s: float
    rejoin_s: float  # "start workers + build engines", or the sum of a rejoin split into parts
    restore_s: float  # of the miniature's checkpoint: not carried over (restore scales with bytes)
    first_step_s: float


# The cold path: every worker restarted, the checkpoint read back from object storage.
COLD = MeasuredRecovery(
    "abrupt loss, cold: object storage (today's path)",
    "f3d9954",
    detect_s=1.2,
    replace_s=0.0,
    rejoin_s=23.7,  # runner up 2.5 + Ray Train workers 15.2 + engine build 6.0
    restore_s=0.04,
    first_step_s=0.6,
)
# The warm path: the restart's runner, Ray Train's controller and actors on the head and its ranks start in
# prestarted processes (torch, DeepSpeed, the model code imported), the checkpoint comes from a peer's
# memory. None would leave the simulator with the cold path only.
WARM: MeasuredRecovery | None = MeasuredRecovery(
    "abrupt loss, warm: peer memory",
    "f3d9954",
    detect_s=1.2,
    replace_s=0.0,
    rejoin_s=5.5,  # runner up 0.6 + Ray Train workers 3.2 + engine build 1.7 (the median of three runs)
    restore_s=0.16,
    first_step_s=1.1,
)
MEASURED = {"cold": COLD, "warm": WARM}
DEFAULT = WARM or COLD  # the path the runtime takes by default (fault_tolerance.warm_restart: on)

PEER_GBPS = 50.0  # per device, between nodes: the achieved InfiniBand figure of ../shared/REFERENCE.md
# A rank's host-side work before its copy can leave for the peer: encode (safetensors layout), sha256 and
# the copy into Ray's object store, on one core. Measured here at 0.6 GB/s (a 300 MB shard: 0.48-0.50 s,
# checkpoint.codec.encode_parts + sha256 + tobytes, 3 rounds on 2026-12-07); a GPU node's cores are faster.
ENCODE_GBPS = 0.6


def memory_commit_s(checkpoint_bytes: float, world_size: int, peer_gbps: float, snapshot_gbps: float) -> float:
    """From a save's start until the step is committed in memory (``checkpoint/memory.py``): the shard
    to host memory, encoded and hashed, then to the buddy node (the copy on the rank's own node is local)."""
    shard = checkpoint_bytes / world_size
    return shard / (snapshot_gbps * 1e9) + shard / (ENCODE_GBPS * 1e9) + shard / (peer_gbps * 1e9)


def shard_restore_from_memory(
    checkpoint_bytes: float, world_size: int, peer_gbps: float, snapshot_gbps: float
) -> float:
    """A replaced rank's shard from its peer's host memory, then onto the device."""
    shard = checkpoint_bytes / world_size
    return shard / (peer_gbps * 1e9) + shard / (snapshot_gbps * 1e9)
