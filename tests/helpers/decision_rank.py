"""One rank of the save-decision test: torch.distributed over gloo, a rank-local clock that runs at
its own rate from its own start, a rank-local measured stall, and a real ``RankCheckpointer`` on a
shared file store. Writes the steps it saved to ``<out>/rank<r>.json``.

    python -m tests.helpers.decision_rank RANK WORLD INIT_FILE STORE_DIR OUT_DIR INTERVAL [per-rank]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from orchestrator.checkpoint.decision import CollectiveSchedule
from orchestrator.checkpoint.objects import FileObjectStore
from orchestrator.checkpoint.policy import IntervalPolicy
from orchestrator.checkpoint.session import RankCheckpointer
from orchestrator.checkpoint.store import CheckpointStore
from orchestrator.clock import ManualClock
from orchestrator.spec.loader import load_spec
from tests.conftest import V3_SPEC

STEPS = 60


def reduce_max(values: list[float]) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def main(rank: int, world: int, init_file: str, store_dir: str, out_dir: str, interval: str, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    spec = load_spec(
        V3_SPEC,
        "local",
        [
            f"checkpoint.interval={interval}",
            # 20,000 interruptions a day across the gang's two nodes (the
            # field's bound is 10,000 a node): auto saves every few steps
            "resources.pools.0.interruptions_per_node_day=10000",
            "resources.pools.1.interruptions_per_node_day=10000",
        ],
    )
    clock = ManualClock(1000.0 * rank)  # clocks disagree on the time ...
    step_seconds = 1.0 + 0.35 * rank  # ... and on how long a step takes
    policy = IntervalPolicy(spec, clock)
    store = CheckpointStore(FileObjectStore(store_dir), "job")
    attempt = int(reduce_max([float(store.register_attempt()) if rank == 0 else 0.0])[0])
    ckpt = RankCheckpointer(
        store,
        rank,
        world,
        {"world_size": world},
        keep_last=100,
        attempt=attempt,
        commit_timeout_s=2 if mode == "per-rank" else 60,
    )
    schedule = CollectiveSchedule(policy, rank, reduce_max)
    saved, intervals, error = [], [], ""
    try:
        for step in range(1, STEPS + 1):
            clock.advance(step_seconds)
            if mode == "per-rank":  # the old way: each rank asks its own policy
                due = policy.due(step)
                if due:
                    policy.saved(step, 0.5 * (rank + 1), None)
            else:
                schedule.measured(0.5 * (rank + 1), 2.0 + rank)  # each rank measured its own stall
                due = schedule.decide(step) is not None
            if due:
                ckpt.save_async(step, {"w": torch.full((16,), float(step))}, 0.0, {})
                saved.append(step)
                intervals.append(policy.interval_seconds())
        ckpt.wait()
    except Exception as exc:  # reported to the test
        error = str(exc)
    Path(out_dir, f"rank{rank}.json").write_text(
        json.dumps({"saved": saved, "error": error, "cost": policy.save_cost_s, "intervals": intervals})
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]), int(args[1]), args[2], args[3], args[4], args[5], args[6] if len(args) > 6 else "collective")
