"""The planner against DeepSeek-V3's published figures and against hand-checked small meshes."""

from __future__ import annotations

import json
import math

import pytest

from orchestrator.errors import PlanError
from orchestrator.plan import reference
from orchestrator.plan.mesh import Mesh
from orchestrator.plan.planner import make_plan
from orchestrator.plan.schedule import BatchSchedule, learning_rate
from orchestrator.spec.loader import load_spec
from orchestrator.spec.schema import LRScheduleSpec
from tests.conftest import MINIMAL_SPEC, V3_SPEC


@pytest.fixture(scope="module")
def v3_plan():
    return make_plan(load_spec(V3_SPEC))


def within(value, target, rel):
    return abs(value - target) <= rel * target


def test_v3_parameter_counts_match_the_published_figures(v3_plan):
    params = v3_plan.params
    assert within(params.total, reference.REFERENCE_PARAMS_TOTAL, 0.01)  # 671B
    assert within(params.active, reference.REFERENCE_PARAMS_ACTIVE, 0.01)  # 36.7B (README_WEIGHTS)
    assert within(params.active_with_embedding, 37e9, 0.02)  # "37B activated"
    assert within(params.mtp, 11.5e9, 0.02)  # README_WEIGHTS: 11.5B unique MTP parameters


def test_v3_flops_per_token_match_isca25(v3_plan):
    assert within(v3_plan.flops_per_token, reference.REFERENCE_FLOPS_PER_TOKEN, 0.01)  # 250 GFLOPs at 4K


def test_v3_mesh_and_expert_groups(v3_plan):
    m = v3_plan.mesh
    assert (m.world_size, m.pipeline, m.data, m.expert, m.tensor, m.expert_data) == (2048, 16, 128, 64, 1, 2)
    assert m.expert_group_nodes() == 8  # EP64 over 8 nodes, as in the V3 report
    for stage in range(16):  # each stage on its own 16 consecutive nodes: neighbours are adjacent
        assert m.stage_nodes(stage) == list(range(16 * stage, 16 * stage + 16))


def test_v3_layer_partition_covers_every_layer_once(v3_plan):
    stages = v3_plan.stages
    assert len(stages) == 16
    blocks = [b for s in stages for b in s.blocks]
    assert blocks == list(range(61))
    assert stages[0].layer_names()[0] == "embed"
    assert stages[-1].layer_names()[-2:] == ["head", "mtp.0"]
    assert all(s.blocks for s in stages)
    # the last stage carries head + MTP, so it holds fewer blocks than the others
    assert len(stages[-1].blocks) < max(len(s.blocks) for s in stages)
    assert (
        sum(p.total for p in v3_plan.stage_params)
        == v3_plan.params.total + v3_plan.params.mtp + v3_plan.params.embedding
    )  # + the MTP modules' tied copy of the embedding on the last stage


def test_v3_costs_against_the_reference(v3_plan):
    pre = v3_plan.phases[0]
    assert within(pre.gpu_hours, 2_664_000, 0.01)
    assert within(pre.step_seconds, reference.REFERENCE_SECONDS_PER_STEP, 0.01)  # 19.926 s/step
    assert within(pre.days, 54.2, 0.01)
    assert 235_000 < pre.steps < 250_000  # about 240K steps
    assert within(v3_plan.total_gpu_hours, reference.REFERENCE_GPU_HOURS, 0.02)
    assert within(v3_plan.total_cost_usd, reference.REFERENCE_COST_USD, 0.02)
    # 180K GPU-hours per trillion tokens
    assert within(pre.gpu_hours / (pre.tokens / 1e12), reference.REFERENCE_GPU_HOURS_PER_TRILLION_TOKENS, 0.01)


def test_v3_memory_fits_an_h800(v3_plan):
    worst = v3_plan.worst_memory()
    assert 0 < worst.total < 80 * 1024**3


def test_json_contract(v3_plan):
    data = json.loads(json.dumps(v3_plan.to_json()))
    for key in (
        "world_size",
        "parallelism",
        "stages",
        "params",
        "memory_per_gpu",
        "flops_per_token",
        "phases",
        "total",
        "reference",
    ):
        assert key in data
    assert set(data["parallelism"]) >= {"pipeline", "expert", "data", "tensor"}
    assert set(data["params"]) >= {"total", "active"}
    for phase in data["phases"]:
        assert set(phase) >= {"name", "tokens", "gpu_hours", "cost_usd", "days"}
    assert set(data["total"]) >= {"gpu_hours", "cost_usd", "days"}
    assert data["reference"]["gpu_hours"] == 2_788_000 and data["reference"]["cost_usd"] == 5_576_000
    assert len(data["ranks"]) == 2048


def test_minimal_plan_by_hand():
    plan = make_plan(load_spec(MINIMAL_SPEC))
    m = plan.mesh
    assert (m.world_size, m.pipeline, m.data, m.expert, m.expert_data) == (4, 2, 2, 2, 1)
    got = [(p.rank, p.stage, p.data_rank, p.expert_rank, p.node) for p in m.placements()]
    assert got == [(0, 0, 0, 0, 0), (1, 0, 1, 1, 0), (2, 1, 0, 0, 1), (3, 1, 1, 1, 1)]
    # parameters by hand for dim 32, vocab 128, 4 blocks (1 dense), 4 routed + 1 shared experts of 16
    dim, vocab = 32, 128
    attention = (dim * 16 + 16 + 16 * 2 * 12) + (dim * (16 + 4) + 16) + 16 * 2 * (8 + 8) + 2 * 8 * dim
    norms = 2 * dim
    dense = attention + norms + 3 * dim * 64
    expert = 3 * dim * 16
    moe = attention + norms + 5 * expert + 4 * dim
    total = vocab * dim + 3 * moe + dense + vocab * dim + dim
    assert plan.params.total == total
    assert plan.params.active == dense + 3 * (moe - 2 * expert) + vocab * dim + dim
    # each device holds half the routed experts of its stage
    for sp in plan.stage_params:
        assert sp.per_device == sp.dense + sp.experts_total // 2


def deepspeed_expert_groups(world, pp, ep):
    """deepspeed.utils.groups._create_expert_and_data_parallel (legacy path), transcribed."""
    pp_stride = world // pp
    groups = []
    for start in range(0, world, pp_stride):
        for i in range(pp_stride // ep):
            groups.append(list(range(start + i * ep, start + (i + 1) * ep)))
    return groups


@pytest.mark.parametrize("pp,dp,ep,per_node", [(2, 2, 2, 2), (4, 8, 4, 8), (16, 128, 64, 8), (3, 6, 3, 4)])
def test_expert_groups_are_the_ones_deepspeed_builds(pp, dp, ep, per_node):
    mesh = Mesh(pp, dp, ep, 1, per_node)
    ours = sorted({tuple(mesh.expert_group(p.stage, p.data_rank)) for p in mesh.placements()})
    assert ours == sorted(tuple(g) for g in deepspeed_expert_groups(pp * dp, pp, ep))


def test_impossible_plans_name_their_numbers():
    with pytest.raises(PlanError) as caught:
        make_plan(load_spec(V3_SPEC, overrides=["parallelism.expert=48"]))
    text = str(caught.value)
    assert "n_routed_experts (256) is not divisible by expert parallelism 48" in text
    assert "must divide the data-parallel degree 128" in text
    with pytest.raises(PlanError) as caught:
        make_plan(load_spec(V3_SPEC, overrides=["parallelism.pipeline=8", "parallelism.expert=8"]))
    assert "GiB per device" in str(caught.value)  # 8 stages of 671B do not fit 80 GB


def test_batch_ramp_steps_match_the_integral():
    ramp = BatchSchedule(3072, 15360, 469e9, granularity=128)
    steps = ramp.count_steps(14.8e12, 4096)
    ramp_steps = 469e9 / (4096 * (15360 - 3072)) * math.log(15360 / 3072)  # dT / (b(T) * seq)
    after = (14.8e12 - 469e9) / (15360 * 4096)
    assert abs(steps - (ramp_steps + after)) < 0.002 * steps
    assert all(ramp.batch_at(t) % 128 == 0 for t in range(0, int(469e9), int(1e9)))
    assert ramp.batch_at(0) == 3072 and ramp.batch_at(469e9) == 15360


def test_learning_rate_schedule_shape():
    s = LRScheduleSpec(
        peak=2.2e-4,
        warmup_steps=2000,
        hold_tokens=10e12,
        decay_tokens=4.3e12,
        final=2.2e-5,
        tail=[{"tokens": 333e9, "lr": 2.2e-5}, {"tokens": 167e9, "lr": 7.3e-6}],
    )
    assert learning_rate(s, 0, 0) == pytest.approx(2.2e-4 / 2000)
    assert learning_rate(s, 1999, 1e9) == pytest.approx(2.2e-4)
    assert learning_rate(s, 5000, 5e12) == 2.2e-4
    assert learning_rate(s, 10**6, 10e12 + 2.15e12) == pytest.approx((2.2e-4 + 2.2e-5) / 2)
    assert learning_rate(s, 10**6, 14.3e12 + 1) == pytest.approx(2.2e-5)
    assert learning_rate(s, 10**6, 14.7e12) == pytest.approx(7.3e-6)
