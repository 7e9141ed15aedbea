"""Every dollar beside the GPUs': checkpoint storage, its requests, and training-data reads, priced
from the spec's ``cost.storage`` (S3 Standard list prices by default).

Why a model and not the bucket's bill: the bill arrives a month late and is not per job. The ledger
knows when each checkpoint committed and the retention rule that deletes it, so each checkpoint's
lifetime is known exactly: from its commit to the commit that evicts it (``keep_last`` /
``keep_every``: the last ``keep_last`` and the first commit of every ``keep_every``-step window, the rule
``checkpoint/store.py: retained`` applies; a test checks the two agree), or to now if it is still
kept. Storage is billed per byte-hour as S3 does (GB-month = GiB x 730 hours); a storage class with
an early-deletion minimum bills a deleted checkpoint for at least ``minimum_days``. Requests follow
orch's upload: per rank shard a multipart upload (create, one PUT per part, complete) or a single
PUT, a receipt PUT, and one manifest PUT per checkpoint; a restore GETs every part, receipt and the
manifest. Deletes are free on S3. Pure functions: no database, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.spec.schema import RetentionSpec, StorageCostSpec

CHECKPOINT_BYTES_PER_PARAM = 2 + 4 + 4 + 4  # bf16 weights, fp32 master, Adam m and v
GIB = 1024**3
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class Checkpointing:
    """What one job writes: the checkpoint's size and how many shards (ranks) it has."""

    checkpoint_bytes: float
    shards: int
    retention: RetentionSpec

    @property
    def shard_bytes(self) -> float:
        return self.checkpoint_bytes / max(1, self.shards)


def checkpoint_bytes(total_params: float) -> float:
    return total_params * CHECKPOINT_BYTES_PER_PARAM


def put_requests(ck: Checkpointing, prices: StorageCostSpec) -> int:
    """PUT-class requests for one checkpoint: every shard's upload and receipt, and the manifest."""
    parts = max(1, math.ceil(ck.shard_bytes / (prices.part_mb * 1024 * 1024)))
    per_shard = (parts + 2 if parts > 1 else 1) + 1
    return ck.shards * per_shard + 1


def get_requests(ck: Checkpointing, prices: StorageCostSpec) -> int:
    """GET requests for one restore: every part of every shard, the receipts, the manifest."""
    parts = max(1, math.ceil(ck.shard_bytes / (prices.part_mb * 1024 * 1024)))
    return ck.shards * (parts + 1) + 1


def lifetimes(commits: list[tuple[int, float]], retention: RetentionSpec, now: float) -> list[tuple[int, float, float]]:
    """(step, committed at, deleted at or ``now``) of every checkpoint, by replaying the retention rule
    after each commit in order."""
    kept: list[tuple[int, float]] = []
    out: list[tuple[int, float, float]] = []
    windows: dict[int, int] = {}  # keep_every window -> its first committed step (kept for good)
    for step, at in sorted(commits, key=lambda c: (c[1], c[0])):
        kept.append((step, at))
        steps = sorted(s for s, _ in kept)
        keep = set(steps[-retention.keep_last :])
        if retention.keep_every > 0:
            windows.setdefault(step // retention.keep_every, step)
            keep |= set(windows.values())
        for s, t in [k for k in kept if k[0] not in keep]:
            out.append((s, t, at))
        kept = [k for k in kept if k[0] in keep]
    out.extend((s, t, max(t, now)) for s, t in kept)
    return sorted(out)


def storage_lines(
    commits: list[tuple[int, float]],
    ck: Checkpointing,
    prices: StorageCostSpec,
    now: float,
    restores: int = 0,
    data_bytes_read: float = 0.0,
) -> dict:
    """The non-GPU lines of a job's bill. ``commits``: (step, committed at) of every checkpoint."""
    lives = lifetimes(commits, ck.retention, now)
    minimum_s = prices.minimum_days * 86400.0
    byte_hours = 0.0
    for _, born, gone in lives:
        alive = gone - born
        deleted = gone < now
        byte_hours += ck.checkpoint_bytes * (max(alive, minimum_s) if deleted else alive) / 3600.0
    gib_months = byte_hours / GIB / HOURS_PER_MONTH
    puts = put_requests(ck, prices) * len(commits)
    gets = get_requests(ck, prices) * restores
    data_gets = math.ceil(data_bytes_read / (prices.part_mb * 1024 * 1024)) if data_bytes_read else 0
    retained = [life for life in lives if life[2] >= now]
    retained_gib = len(retained) * ck.checkpoint_bytes / GIB
    lines = {
        "checkpoint_storage": {"gib_months": gib_months, "cost_usd": gib_months * prices.gb_month_usd},
        "checkpoint_puts": {"requests": puts, "cost_usd": puts / 1000 * prices.put_per_1000_usd},
        "checkpoint_restores": {"requests": gets, "cost_usd": gets / 1000 * prices.get_per_1000_usd},
        "data_reads": {
            "bytes": data_bytes_read,
            "requests": data_gets,
            "cost_usd": data_gets / 1000 * prices.get_per_1000_usd + data_bytes_read / 1e9 * prices.transfer_per_gb_usd,
        },
    }
    return {
        **lines,
        "cost_usd": sum(line["cost_usd"] for line in lines.values()),
        "checkpoints": len(commits),
        "checkpoint_bytes": ck.checkpoint_bytes,
        "retained": {
            "checkpoints": len(retained),
            "gib": retained_gib,
            "usd_per_month": retained_gib * prices.gb_month_usd,
        },
    }


def steady_storage_usd(
    ck: Checkpointing, prices: StorageCostSpec, interval_s: float, run_s: float, total_steps: int
) -> dict:
    """What checkpointing every ``interval_s`` for ``run_s`` costs (the plan's view): every save is
    PUT, ``keep_last`` checkpoints live at any time, and the first of every ``keep_every``-step window
    (saves spread evenly over ``total_steps``) accumulates, as retention keeps them."""
    saves = max(0, int(run_s // interval_s)) if interval_s > 0 else 0
    commits = [((i + 1) * total_steps // max(1, saves), (i + 1) * interval_s) for i in range(saves)]
    return storage_lines(commits, ck, prices, run_s)
