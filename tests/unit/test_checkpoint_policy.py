"""Checkpoint interval policy: steps, minutes, and Young/Daly auto on a manual clock."""

from __future__ import annotations

import math

import pytest

from orchestrator.checkpoint.policy import IntervalPolicy, gang_mtbf_seconds, young_daly_interval
from orchestrator.clock import ManualClock
from orchestrator.spec import load_spec
from tests.conftest import MINIMAL_SPEC, V3_SPEC


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
    spec = load_spec(V3_SPEC, overrides=["resources.pools.0.interruptions_per_node_day=0.01",
                                         "checkpoint.interval=auto"])
    policy = IntervalPolicy(spec, clock)
    mtbf = 86400 / 2.56
    assert policy.interval_seconds() == pytest.approx(min(1800, mtbf / 2))  # before any measurement
    policy.saved(100, stall_s=20.0, duration_s=90.0)
    assert policy.interval_seconds() == pytest.approx(math.sqrt(2 * 20 * mtbf) - 20)
    policy.saved(200, stall_s=20.0, duration_s=5000.0)
    assert policy.interval_seconds() == 5000.0  # never shorter than one save: one in flight at a time
