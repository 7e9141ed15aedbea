"""What a checkpoint and a restart cost the simulated run, from the plan and the storage.

A checkpoint holds bf16 weights plus fp32 master weights and Adam's two moments: 14 bytes per
parameter (MTP included), sharded over the ranks (ZeRO-1 and expert sharding give every rank a
disjoint part). An asynchronous save stalls training while each device copies its shard to host
memory; the upload then runs at the storage's aggregate bandwidth, and the checkpoint commits when
it ends. A restart costs the gang's start (processes, collectives, warm-up) plus reading the
checkpoint back at the same bandwidth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from orchestrator.plan.planner import Plan

CHECKPOINT_BYTES_PER_PARAM = 2 + 4 + 4 + 4  # bf16 weights, fp32 master, Adam m and v


@dataclass(frozen=True)
class RunCosts:
    checkpoint_bytes: float
    stall_s: float  # training stops this long per save
    save_s: float  # from the save's start to its commit
    restore_s: float
    restart_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def run_costs(plan: Plan, storage_gbps: float, snapshot_gbps: float, restart_s: float,
              blocking_saves: bool = False) -> RunCosts:
    size = (plan.params.total + plan.params.mtp) * CHECKPOINT_BYTES_PER_PARAM
    snapshot = size / plan.mesh.world_size / (snapshot_gbps * 1e9)
    transfer = size / (storage_gbps * 1e9)
    save = snapshot + transfer
    return RunCosts(checkpoint_bytes=size, stall_s=save if blocking_saves else snapshot, save_s=save,
                    restore_s=transfer, restart_s=restart_s)
