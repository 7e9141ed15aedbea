"""Every dollar beside the GPUs': checkpoint storage, requests and data reads, computed by hand for a
small case and compared with the ledger's lines (``orch cost`` reads the same figures)."""

from __future__ import annotations

import pytest

from orchestrator.clock import ManualClock
from orchestrator.ledger.report import cost_report
from orchestrator.plan.params import model_params
from orchestrator.plan.storage import Checkpointing, get_requests, lifetimes, put_requests, storage_lines
from orchestrator.spec.loader import load_spec
from orchestrator.spec.schema import RetentionSpec, StorageCostSpec
from orchestrator.state.store import StateStore
from tests.conftest import MINIMAL_SPEC
from tests.helpers.job_rows import minimal_job_row

GIB = 1024**3
HOUR = 3600.0


def test_three_checkpoints_keep_last_two_by_hand():
    # 3 GiB checkpoint in 2 shards of 1,536 MiB: 96 parts of 16 MiB each
    ck = Checkpointing(3 * GIB, 2, RetentionSpec(keep_last=2))
    prices = StorageCostSpec()  # S3 Standard: $0.023/GB-month, $0.005 per 1,000 PUTs, $0.0004 per 1,000 GETs
    # per shard: create + 96 parts + complete + receipt = 99; two shards and a manifest: 199
    assert put_requests(ck, prices) == 199
    assert get_requests(ck, prices) == 2 * (96 + 1) + 1
    commits = [(10, 0.0), (20, HOUR), (30, 2 * HOUR)]
    # step 10 is deleted when step 30 commits (keep_last=2); 20 and 30 live until now (3 h)
    assert lifetimes(commits, ck.retention, 3 * HOUR) == [
        (10, 0.0, 2 * HOUR),
        (20, HOUR, 3 * HOUR),
        (30, 2 * HOUR, 3 * HOUR),
    ]
    lines = storage_lines(commits, ck, prices, 3 * HOUR, restores=1)
    gib_hours = 3 * (2 + 2 + 1)
    assert lines["checkpoint_storage"]["gib_months"] == pytest.approx(gib_hours / 730)
    assert lines["checkpoint_storage"]["cost_usd"] == pytest.approx(gib_hours / 730 * 0.023)
    assert lines["checkpoint_puts"] == {"requests": 597, "cost_usd": pytest.approx(597 / 1000 * 0.005)}
    assert lines["checkpoint_restores"] == {"requests": 195, "cost_usd": pytest.approx(195 / 1000 * 0.0004)}
    assert lines["cost_usd"] == pytest.approx(gib_hours / 730 * 0.023 + 597 * 5e-6 + 195 * 4e-7)
    assert lines["retained"] == {"checkpoints": 2, "gib": 6.0, "usd_per_month": pytest.approx(6 * 0.023)}


def test_early_deletion_minimum_and_keep_every():
    ck = Checkpointing(GIB, 1, RetentionSpec(keep_last=1, keep_every=20))
    ia = StorageCostSpec(gb_month_usd=0.0125, minimum_days=30)  # S3 Standard-IA
    commits = [(10, 0.0), (15, HOUR), (30, 2 * HOUR)]
    # 10 is the first of window 0 (kept for good); 15 is deleted when 30 commits (after 1 h) but billed
    # 30 days; 30 is the last and the first of window 1
    lines = storage_lines(commits, ck, ia, 3 * HOUR)
    assert lines["checkpoint_storage"]["gib_months"] == pytest.approx((3 + 30 * 24 + 1) / 730)
    assert lines["retained"]["checkpoints"] == 2


def test_the_ledger_books_storage_from_the_commits_the_runner_recorded(tmp_path):
    clock = ManualClock(0.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    spec = load_spec(MINIMAL_SPEC, overrides=["checkpoint.retention.keep_last=1"])
    store.insert_job(minimal_job_row(spec))
    for step, at in ((5, 0.0), (10, 10 * HOUR)):
        clock.set(at)
        store.add_event("checkpoint.committed", f"job-1: checkpoint at step {step}", "job-1", {"step": step})
    params = model_params(spec.model)
    size = (params.total + params.mtp) * 14  # bf16 weights, fp32 master, Adam m and v
    report = cost_report(store, "job-1", now=30 * HOUR)
    storage = report["storage"]
    # step 5 lives 10 h (deleted when 10 commits), step 10 lives 20 h: 30 h of one checkpoint
    assert storage["checkpoint_storage"]["cost_usd"] == pytest.approx(size * 30 / GIB / 730 * 0.023)
    # tiny shards: one PUT and a receipt per shard (4 ranks) and the manifest, per checkpoint
    assert storage["checkpoint_puts"]["requests"] == 2 * (4 * 2 + 1)
    assert report["total_cost_usd"] == pytest.approx(report["cost_usd"] + storage["cost_usd"])
    assert cost_report(store, now=30 * HOUR)["storage_cost_usd"] == pytest.approx(storage["cost_usd"])


def test_the_priced_retention_is_the_store_s_retention():
    """plan/storage.py replays checkpoint/store.py's rule (a pure module cannot import the store's)."""
    import random

    from orchestrator.checkpoint.store import retained

    rng = random.Random(7)
    for _ in range(50):
        keep_last, keep_every = rng.randint(1, 4), rng.choice([0, 7, 50])
        steps = sorted(rng.sample(range(1, 400), rng.randint(1, 40)))
        commits = [(s, float(i)) for i, s in enumerate(steps)]
        alive = {
            s
            for s, _, gone in lifetimes(
                commits, RetentionSpec(keep_last=keep_last, keep_every=keep_every), float(len(steps))
            )
            if gone >= len(steps)
        }
        assert alive == retained(steps, keep_last, keep_every)
