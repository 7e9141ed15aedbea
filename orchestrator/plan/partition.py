"""Which layers sit on which pipeline stage.

The pipeline is ``embed, block 0..n-1, head, mtp 0..d-1``: the embedding on the first stage,
the head and the multi-token-prediction modules (which need the head) on the last. Blocks are
split into contiguous runs, one per stage, minimising the slowest stage's training FLOPs (the
pipeline runs at the pace of its slowest stage), so uneven partitions such as 61 blocks + head
+ MTP over 16 stages come out right. A user may also give the blocks per stage explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.plan.flops import block_flops, head_flops, mtp_flops


@dataclass(frozen=True)
class StageLayers:
    stage: int
    first_block: int
    last_block: int  # inclusive; -1 when the stage holds no block
    has_embedding: bool
    has_head: bool
    mtp_modules: int

    @property
    def blocks(self) -> list[int]:
        return list(range(self.first_block, self.last_block + 1))

    def layer_names(self) -> list[str]:
        names = ["embed"] if self.has_embedding else []
        names += [f"block.{i}" for i in self.blocks]
        if self.has_head:
            names.append("head")
        names += [f"mtp.{i}" for i in range(self.mtp_modules)]
        return names


def stage_layers_from_counts(counts: list[int], mtp_depth: int) -> list[StageLayers]:
    stages, first = [], 0
    last_stage = len(counts) - 1
    for s, count in enumerate(counts):
        stages.append(
            StageLayers(
                stage=s,
                first_block=first,
                last_block=first + count - 1,
                has_embedding=s == 0,
                has_head=s == last_stage,
                mtp_modules=mtp_depth if s == last_stage else 0,
            )
        )
        first += count
    return stages


def balanced_counts(model, seq_len: int, stages: int) -> list[int]:
    """Blocks per stage minimising the maximum stage FLOPs (exact dynamic programme).

    Requires ``1 <= stages <= n_layers``; each stage gets at least one block.
    """
    n = model.n_layers
    cost = [block_flops(model, i, seq_len) for i in range(n)]
    tail_extra = head_flops(model) + mtp_flops(model, seq_len)
    prefix = [0.0]
    for c in cost:
        prefix.append(prefix[-1] + c)

    def run(j: int, i: int, last: bool) -> float:  # blocks j..i-1
        return prefix[i] - prefix[j] + (tail_extra if last else 0.0)

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        last = s == stages
        for i in range(s, n - (stages - s) + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], run(j, i, last))
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    counts, i = [], n
    for s in range(stages, 0, -1):
        j = cut[s][i]
        counts.append(i - j)
        i = j
    return counts[::-1]
