"""What a checkpoint and a restart cost the simulated run, from the plan and the storage.

A checkpoint holds bf16 weights plus fp32 master weights and Adam's two moments: 14 bytes per
parameter (MTP included), sharded over the ranks (ZeRO-1 and expert sharding give every rank a
disjoint part). An asynchronous save stalls training while each device copies its shard to host
memory; the upload then runs at the storage's aggregate bandwidth, and the checkpoint commits when
it ends. With the in-memory tier (restore from memory) the step is restorable earlier, once every
rank's copy is in its buddy's memory (``memory_commit_s``: seconds, where the upload takes minutes).
A restart is the runtime's sequence (``plan/recovery.py``): detect, rejoin (the gang's start),
restore (from object storage at the same bandwidth, or from a peer's memory), first step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from orchestrator.plan.planner import Plan
from orchestrator.plan.recovery import COLD, PEER_GBPS, memory_commit_s, shard_restore_from_memory

CHECKPOINT_BYTES_PER_PARAM = 2 + 4 + 4 + 4  # bf16 weights, fp32 master, Adam m and v


@dataclass(frozen=True)
class RunCosts:
    checkpoint_bytes: float
    stall_s: float  # training stops this long per save
    save_s: float  # from the save's start to its commit
    restore_s: float  # the newest committed checkpoint back on the devices (memory or storage)
    restart_s: float  # the gang's cold start: every worker started, engines built (restore excluded)
    detect_s: float = 0.0  # an abrupt loss until the control plane knows (not after a notice's save)
    warm_restart_s: float | None = None  # the start when every node of the gang has its workers up
    restore_from: str = "storage"  # memory | storage
    memory_commit_s: float | None = None  # from a save's start until restorable from memory (None: at commit)
    storage_restore_s: float | None = None  # the checkpoint from object storage (when no peer holds it)

    def as_dict(self) -> dict:
        return asdict(self)

    def restorable_after_s(self) -> float:
        """From a save's start until a restart can resume from it."""
        return min(self.save_s, self.memory_commit_s) if self.memory_commit_s is not None else self.save_s

    def start_s(self, warm: bool) -> float:
        """The gang's start: warm when the warm path is modelled and every node has workers up."""
        return self.warm_restart_s if warm and self.warm_restart_s is not None else self.restart_s


def checkpoint_bytes(plan: Plan) -> float:
    return (plan.params.total + plan.params.mtp) * CHECKPOINT_BYTES_PER_PARAM


def run_costs(
    plan: Plan,
    storage_gbps: float,
    snapshot_gbps: float,
    restart_s: float = COLD.rejoin_s,
    blocking_saves: bool = False,
    detect_s: float = 0.0,
    warm_restart_s: float | None = None,
    restore_from: str = "storage",
    peer_gbps: float = PEER_GBPS,
) -> RunCosts:
    size = checkpoint_bytes(plan)
    snapshot = size / plan.mesh.world_size / (snapshot_gbps * 1e9)
    transfer = size / (storage_gbps * 1e9)
    save = snapshot + transfer
    restore = (
        shard_restore_from_memory(size, plan.mesh.world_size, peer_gbps, snapshot_gbps)
        if restore_from == "memory"
        else transfer
    )
    return RunCosts(
        checkpoint_bytes=size,
        stall_s=save if blocking_saves else snapshot,
        save_s=save,
        restore_s=restore,
        restart_s=restart_s,
        detect_s=detect_s,
        warm_restart_s=warm_restart_s,
        restore_from=restore_from,
        memory_commit_s=(
            memory_commit_s(size, plan.mesh.world_size, peer_gbps, snapshot_gbps) if restore_from == "memory" else None
        ),
        storage_restore_s=transfer,
    )


def scenario_costs(plan: Plan, scenario) -> RunCosts:
    """The costs of a ``Scenario`` (the simulator's and the sweep's one way to build them)."""
    return run_costs(
        plan,
        scenario.storage_gbps,
        scenario.snapshot_gbps,
        scenario.restart_s,
        scenario.blocking_saves,
        detect_s=scenario.detect_s,
        warm_restart_s=scenario.warm_restart_s,
        restore_from=scenario.restore_from,
        peer_gbps=scenario.peer_gbps,
    )
