"""Checkpoint interval policy: steps, minutes, and Young/Daly auto on a manual clock."""

from __future__ import annotations

import math

import pytest

from orchestrator.checkpoint.policy import IntervalPolicy, gang_mtbf_seconds, young_daly_interval
from orchestrator.clock import ManualClock
from orchestrator.spec.loader import load_spec
from tests.conftest import MINIMAL_SPEC, V3_SPEC

# V3's 9,556,910,612,480-byte checkpoint in 2,048 shards of 4,666,460,260 bytes: 279 parts of 16 MiB, so
# per shard create + 279 parts + complete + receipt = 282 PUTs, and one manifest: 577,537 PUTs a save,
# $2.887685 at $0.005 per 1,000; the gang costs 2,048 x $2 / 3,600 s = $1.137778 a second
V3_REQUESTS_S = 577_537 * 0.005 / 1000 / (2048 * 2.0 / 3600)


def test_young_daly_formula():
    assert young_daly_interval(10.0, 3600.0) == pytest.approx(math.sqrt(2 * 10 * 3600) - 10)
    assert math.isinf(young_daly_interval(10.0, math.inf))
    assert young_daly_interval(100.0, 40.0) == 40.0  # cost beyond twice the MTBF: save every MTBF


def test_gang_mtbf_from_pool_rates():
    spec = load_spec(V3_SPEC, overrides=["resources.pools.0.interruptions_per_node_day=0.01"])
    assert gang_mtbf_seconds(spec) == pytest.approx(86400 / (256 * 0.01))
    assert math.isinf(gang_mtbf_seconds(load_spec(V3_SPEC)))


def test_steps_and_minutes():
    clock = ManualClock(0)
    steps = IntervalPolicy(load_spec(MINIMAL_SPEC, overrides=["checkpoint.interval={steps: 5}"]), clock)
    assert [s for s in range(1, 13) if steps.due(s) and not steps.saved(s, 0.0)] == [5, 10]
    minutes = IntervalPolicy(load_spec(MINIMAL_SPEC, overrides=["checkpoint.interval={minutes: 2}"]), clock)
    assert not minutes.due(1)
    clock.advance(121)
    assert minutes.due(2)


def test_auto_follows_the_measured_cost_and_the_interruption_rate():
    clock = ManualClock(0)
    spec = load_spec(
        V3_SPEC, overrides=["resources.pools.0.interruptions_per_node_day=0.01", "checkpoint.interval=auto"]
    )
    policy = IntervalPolicy(spec, clock)
    mtbf = 86400 / 2.56
    assert policy.interval_seconds() == pytest.approx(min(1800, mtbf / 2))  # before any measurement
    policy.saved(100, stall_s=20.0, duration_s=90.0)
    cost = 20.0 + V3_REQUESTS_S  # the stall plus the save's PUT requests in seconds of the gang's price
    assert policy.interval_seconds() == pytest.approx(math.sqrt(2 * cost * mtbf) - cost)
    policy.saved(200, stall_s=20.0, duration_s=5000.0)
    assert policy.interval_seconds() == 5000.0  # never shorter than one save: one in flight at a time


def test_auto_picks_the_optimum_of_gpu_waste_plus_request_dollars():
    # cost model, per second of the gang: C' / (tau + C') + (tau + C') / 2M with C' = C + S / P (P the gang's
    # $/s, S a save's PUT dollars): GPU waste plus request dollars; minimum at tau = sqrt(2 M C') - C'
    spec = load_spec(
        V3_SPEC,
        overrides=[
            "resources.pools.0.interruptions_per_node_day=0.1",
            "checkpoint.interval=auto",
            "cost.storage.put_per_1000_usd=0.05",
        ],
    )
    policy = IntervalPolicy(spec, ManualClock(0))
    policy.saved(1, stall_s=0.47, duration_s=96.0)
    mtbf = 86400 / 25.6
    effective = 0.47 + 10 * V3_REQUESTS_S  # PUTs priced 10x S3's: 25.4 s of the gang per save
    tau = math.sqrt(2 * effective * mtbf) - effective
    # 391.9 s; the stall alone: 55.9 s (then 96 s: one save in flight)
    assert policy.interval_seconds() == pytest.approx(tau)
    waste = lambda t: effective / (t + effective) + (t + effective) / (2 * mtbf)  # noqa: E731
    assert all(waste(tau) <= waste(tau * f) for f in (0.8, 0.9, 1.1, 1.25))


def test_auto_never_writes_faster_than_the_stated_bandwidth():
    spec = load_spec(
        V3_SPEC,
        overrides=[
            "resources.pools.0.interruptions_per_node_day=0.1",
            "checkpoint.interval=auto",
            "cost.storage.write_gbps=20",
        ],
    )
    policy = IntervalPolicy(spec, ManualClock(0))
    policy.saved(1, stall_s=0.47, duration_s=96.0)
    assert policy.interval_seconds() == pytest.approx(9_556_910_612_480 / 20e9)  # 477.8 s per 9.56 TB


def test_auto_follows_the_interruptions_the_run_observes():
    spec = load_spec(
        V3_SPEC, overrides=["resources.pools.0.interruptions_per_node_day=0.01", "checkpoint.interval=auto"]
    )
    policy = IntervalPolicy(spec, ManualClock(0))
    policy.saved(1, stall_s=20.0, duration_s=90.0)
    before = policy.interval_seconds()
    # the spec says 2.56 a day; the run saw 40 in two days: Gamma-Poisson with the spec worth one day
    policy.observe_interruptions(40, 2 * 86400.0)
    assert policy.observed_mtbf_s == pytest.approx(3 * 86400.0 / (2.56 + 40))
    cost = 20.0 + V3_REQUESTS_S
    assert policy.interval_seconds() == pytest.approx(math.sqrt(2 * cost * policy.observed_mtbf_s) - cost)
    assert policy.interval_seconds() < before / 2  # MTBF 5.7x shorter: interval ~2.4x shorter


def test_what_57_days_of_v3_checkpoints_cost():
    """The figures docs/checkpoints.md states for V3 (cost.storage defaults: S3 Standard)."""
    from orchestrator.checkpoint.policy import planned_checkpoints
    from orchestrator.plan.planner import make_plan

    spec = load_spec(V3_SPEC)
    plan = make_plan(spec)
    planned = planned_checkpoints(spec, plan.total_days, plan.total_steps)
    # no interruption rate in the spec: auto's 30-minute default; 2,733 saves of 577,537 PUTs each
    assert planned["interval_s"] == 1800.0 and planned["saves"] == 2733
    assert planned["requests_usd"] == pytest.approx(2733 * 577_537 * 0.005 / 1000)  # $7,892
    gib = 9_556_910_612_480 / 1024**3  # 8,900.7 GiB
    # keep_last 3 live the whole run; the first save of each of the 50 keep_every windows (5,000 steps of
    # 247,797, saves spread evenly) lives from about w x 5000 / 247797 of the run to its end
    windows = sum(1 - w * 5000 / plan.total_steps for w in range(plan.total_steps // 5000 + 1))  # 25.3 runs
    month_fraction = plan.total_days * 24 / 730
    assert planned["storage_usd"] == pytest.approx((3 + windows) * gib * month_fraction * 0.023, rel=0.01)  # $10.8K
    assert planned["kept_after_usd_per_month"] == pytest.approx(53 * gib * 0.023)  # 3 last + 50 windows: $10.8K
    # every 4.6 minutes (what Young/Daly gives for the 0.47 s stall at a 22.6-hour gang MTBF)
    often = planned_checkpoints(spec, plan.total_days, plan.total_steps, 276.0)
    assert often["saves"] == 17828 and often["requests_usd"] == pytest.approx(51_481.65, abs=0.01)
    assert often["write_gbps"] == pytest.approx(34.6, abs=0.05)
    mtbf = (276.0 + 0.47) ** 2 / (2 * 0.47)
    tau = young_daly_interval(0.47 + V3_REQUESTS_S, mtbf)  # the dollar-aware rule at the same MTBF
    assert tau / 60 == pytest.approx(11.6, abs=0.05)
    chosen = planned_checkpoints(spec, plan.total_days, plan.total_steps, tau)
    assert chosen["requests_usd"] == pytest.approx(20_401.49, abs=0.01)

    def gpu_waste(t):  # expected lost and stalled GPU dollars over the plan
        return (0.47 / (t + 0.47) + (t + 0.47) / (2 * mtbf)) * plan.total_cost_usd

    assert gpu_waste(276.0) + often["cost_usd"] == pytest.approx(81_353, abs=5)
    assert gpu_waste(tau) + chosen["cost_usd"] == pytest.approx(58_999, abs=5)
