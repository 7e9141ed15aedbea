"""The training runtime for real: Ray Train workers, DeepSpeed pipeline engines, gloo, PP2 x EP2 x ZeRO-1.

One full run of the local miniature (67 steps) and one 8-step run are shared by the tests below.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import apply_profile, load_spec, read_spec_file
from orchestrator.train.data import MarkovSource
from orchestrator.train.reference import ReferenceTrainer
from tests.conftest import V3_SPEC

pytestmark = pytest.mark.slow

EQUIVALENCE_STEPS = 8
LOSS_TOLERANCE = 1e-4  # relative; float32 sums in another order across processes


@pytest.fixture(scope="module")
def local_spec():
    return load_spec(V3_SPEC, profile="local")


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}})
    yield
    ray.shutdown()


def _train(tmp_path_factory, name: str, max_steps: int | None, describe: bool = False) -> dict:
    from orchestrator.train.ray_worker import run_with_ray_train

    base = tmp_path_factory.mktemp(name)
    mapping = apply_profile(read_spec_file(V3_SPEC), "local", str(V3_SPEC))
    metrics = base / "metrics.jsonl"
    describe_dir = base / "ranks"
    describe_dir.mkdir()
    result = run_with_ray_train(
        mapping,
        4,
        str(base / "ray"),
        name,
        max_steps=max_steps,
        metrics_path=str(metrics),
        describe_dir=str(describe_dir) if describe else None,
    )
    assert result.error is None, result.error
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    ranks = [json.loads(p.read_text()) for p in sorted(describe_dir.glob("rank*.json"))]
    return {"history": history, "ranks": ranks}


@pytest.fixture(scope="module")
def full_run(ray_session, tmp_path_factory):
    return _train(tmp_path_factory, "full", None, describe=True)


@pytest.fixture(scope="module")
def short_run(ray_session, tmp_path_factory):
    return _train(tmp_path_factory, "short", EQUIVALENCE_STEPS)


def test_each_rank_holds_only_its_stage_and_expert_shard(full_run, local_spec):
    plan = make_plan(local_spec)
    ranks = {r["rank"]: r for r in full_run["ranks"]}
    assert sorted(ranks) == [0, 1, 2, 3]
    for rank, info in ranks.items():
        placement = plan.mesh.placement(rank)
        assert info["placement"] == placement.as_dict()
        assert info["params"] == plan.stage_params[placement.stage].per_device  # the planner's count
        stage = plan.stages[placement.stage]
        assert [n for n in info["layers"] if n.startswith("block.")] == [f"block.{b}" for b in stage.blocks]
        half = local_spec.model.n_routed_experts // 2
        assert info["experts"] == list(range(placement.expert_rank * half, (placement.expert_rank + 1) * half))
    assert ranks[0]["layers"][0] == "embed" and ranks[2]["layers"][-1] == "head+mtp"
    assert ranks[0]["params"] < plan.params.total  # nobody holds the whole model


def test_pipeline_expert_parallel_run_equals_a_single_process(full_run, local_spec):
    reference = ReferenceTrainer(local_spec, data_parallel=2)
    torch.set_num_threads(1)
    expected = [m["loss"] for m in reference.train(EQUIVALENCE_STEPS)]
    got = [m["loss"] for m in full_run["history"][:EQUIVALENCE_STEPS]]
    for step, (a, b) in enumerate(zip(got, expected), start=1):
        assert abs(a - b) <= LOSS_TOLERANCE * abs(b), f"step {step}: distributed {a} vs single process {b}"
    assert got[-1] < got[0]


def test_loss_falls_toward_the_entropy_floor(full_run, local_spec):
    history = full_run["history"]
    plan = make_plan(local_spec)
    assert len(history) == plan.total_steps  # the whole phase, as planned
    floor = MarkovSource(local_spec.model.vocab_size, local_spec.data.seed, local_spec.data.branching).entropy_rate()
    start = history[0]["loss"]
    end = statistics.mean(m["loss"] for m in history[-5:])
    assert end > floor - 0.05  # no model beats the entropy rate
    assert end - floor < 0.15 * (start - floor), f"loss {start:.3f} -> {end:.3f}, floor {floor:.3f}"


def test_every_step_reports_the_metrics_the_control_plane_uses(full_run):
    for m in full_run["history"]:
        for key in ("loss", "tokens_per_s", "step_time_s", "gc_s", "expert_imbalance", "lr", "global_batch", "tokens"):
            assert key in m
        assert m["tokens_per_s"] > 0 and m["expert_imbalance"] >= 1.0 and m["gc_s"] >= 0.0
    batches = [m["global_batch"] for m in full_run["history"]]
    assert batches[0] == 8 and batches[-1] == 16 and batches == sorted(batches)  # the ramp


def test_same_seed_gives_bit_identical_losses(full_run, short_run):
    first = [m["loss"] for m in full_run["history"][:EQUIVALENCE_STEPS]]
    again = [m["loss"] for m in short_run["history"]]
    assert again == first


def test_bias_balancing_lowers_expert_load_imbalance(local_spec):
    torch.set_num_threads(1)
    steps = 40

    def late_imbalance(speed):
        history = ReferenceTrainer(local_spec, data_parallel=2, balance_speed=speed).train(steps)
        return statistics.mean(m["expert_imbalance"] for m in history[-10:])

    unbalanced, balanced = late_imbalance(0.0), late_imbalance(0.001)
    assert balanced < unbalanced - 0.1, f"max/mean load {balanced:.3f} with balancing vs {unbalanced:.3f} without"
