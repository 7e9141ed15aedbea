"""The device mesh and the rank -> (stage, data replica, expert shard, node) mapping.

The mapping is stage-major, like DeepSpeed's ``PipeDataParallelTopology`` (axes pipe, data, model):
``rank = (stage * data + d) * tensor + t``. Inside a stage, expert-parallel groups are consecutive
data ranks, exactly as ``deepspeed.utils.groups._create_expert_and_data_parallel`` forms them, so
an EP group occupies the fewest nodes and pipeline neighbours sit on adjacent nodes. Placement
groups order their bundles by this mapping; the training runtime builds its topology from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RankPlacement:
    rank: int
    stage: int  # pipeline stage
    data_rank: int  # replica index among the stage's data-parallel ranks
    expert_rank: int  # shard of the routed experts this rank holds
    expert_data_rank: int  # replica index among ranks holding the same expert shard
    tensor_rank: int
    node: int
    local_rank: int  # device index on the node

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Mesh:
    pipeline: int
    data: int
    expert: int
    tensor: int
    devices_per_node: int

    @property
    def world_size(self) -> int:
        return self.pipeline * self.data * self.tensor

    @property
    def expert_data(self) -> int:
        """Replicas of each expert shard: the ZeRO-1 degree of expert parameters."""
        return self.data // self.expert

    @property
    def nodes(self) -> int:
        return -(-self.world_size // self.devices_per_node)

    def placement(self, rank: int) -> RankPlacement:
        if not 0 <= rank < self.world_size:
            raise IndexError(f"rank {rank} outside world of {self.world_size}")
        tensor_rank = rank % self.tensor
        data_rank = (rank // self.tensor) % self.data
        stage = rank // (self.tensor * self.data)
        return RankPlacement(
            rank=rank,
            stage=stage,
            data_rank=data_rank,
            expert_rank=data_rank % self.expert,
            expert_data_rank=data_rank // self.expert,
            tensor_rank=tensor_rank,
            node=rank // self.devices_per_node,
            local_rank=rank % self.devices_per_node,
        )

    def placements(self) -> list[RankPlacement]:
        return [self.placement(r) for r in range(self.world_size)]

    def expert_group(self, stage: int, data_rank: int, tensor_rank: int = 0) -> list[int]:
        """The ranks that exchange tokens by all-to-all with the given rank."""
        first = data_rank - data_rank % self.expert
        base = stage * self.data * self.tensor
        return [base + (first + i) * self.tensor + tensor_rank for i in range(self.expert)]

    def expert_group_nodes(self) -> int:
        """Most nodes any expert-parallel group spans."""
        return max(
            len({r // self.devices_per_node for r in self.expert_group(s, d)})
            for s in range(self.pipeline)
            for d in range(0, self.data, self.expert)
        )

    def stage_nodes(self, stage: int) -> list[int]:
        first = stage * self.data * self.tensor
        last = first + self.data * self.tensor - 1
        return list(range(first // self.devices_per_node, last // self.devices_per_node + 1))
