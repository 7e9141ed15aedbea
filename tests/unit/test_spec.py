"""Spec loading: profiles, --set overrides, YAML details, error paths and hints."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.errors import SpecError
from orchestrator.spec.loader import apply_overrides, deep_merge, load_spec, parse_yaml_text, validate_mapping
from orchestrator.spec.schema import BatchRamp, CheckpointInterval, ShardData, SyntheticData
from tests.conftest import MINIMAL_SPEC, V3_SPEC


def test_v3_spec_is_the_published_run():
    spec = load_spec(V3_SPEC)
    m = spec.model
    assert (m.dim, m.n_layers, m.n_dense_layers, m.n_routed_experts, m.n_activated_experts) == (7168, 61, 3, 256, 8)
    assert (m.q_lora_rank, m.kv_lora_rank, m.qk_rope_head_dim, m.mtp_depth) == (1536, 512, 64, 1)
    assert spec.resources.nodes * spec.resources.gpus_per_node == 2048
    assert (spec.parallelism.pipeline, spec.parallelism.expert, spec.parallelism.tensor) == (16, 64, 1)
    assert spec.parallelism.schedule == "dualpipe" and spec.parallelism.zero_stage == 1
    ramp = spec.phases[0].global_batch
    assert isinstance(ramp, BatchRamp) and (ramp.start, ramp.end, ramp.ramp_tokens) == (3072, 15360, 469e9)
    assert spec.phases[0].tokens == 14.8e12 and spec.phases[0].seq_len == 4096
    assert spec.checkpoint.uri.startswith("s3://")
    assert spec.cost.price_per_gpu_hour == 2.0


def test_local_profile_is_a_miniature_of_the_same_architecture():
    base, local = load_spec(V3_SPEC), load_spec(V3_SPEC, profile="local")
    assert local.name == "v3-local"
    assert local.parallelism.pipeline >= 2 and local.parallelism.expert >= 2
    m = local.model
    assert m.q_lora_rank > 0 and m.kv_lora_rank > 0  # MLA
    assert m.n_shared_experts >= 1 and m.n_routed_experts > m.n_activated_experts  # DeepSeekMoE
    assert 0 < m.n_dense_layers < m.n_layers and m.mtp_depth >= 1
    assert m.score_func == base.model.score_func
    # the profile replaced the data section wholesale because it changed its source
    assert isinstance(local.data, SyntheticData) and isinstance(base.data, ShardData)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(SpecError) as caught:
        load_spec(V3_SPEC, profile="locl")
    assert "did you mean 'local'" in str(caught.value)


def test_set_overrides_are_typed_and_validated():
    spec = load_spec(MINIMAL_SPEC, overrides=["training.seed=7", "phases.0.tokens=8.0e3", "parallelism.schedule=gpipe"])
    assert spec.training.seed == 7 and spec.phases[0].tokens == 8000.0 and spec.parallelism.schedule == "gpipe"
    with pytest.raises(SpecError) as caught:
        load_spec(MINIMAL_SPEC, overrides=["parallelism.pipline=4"])
    assert "did you mean 'pipeline'" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        load_spec(MINIMAL_SPEC, overrides=["model.dim"])
    assert "expected dotted.path=value" in str(caught.value)


def test_profile_values_are_validated_like_the_base(tmp_path):
    data = yaml.safe_load(MINIMAL_SPEC.read_text())
    data["profiles"] = {"bad": {"model": {"n_heads": "many"}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    load_spec(path)  # the base is fine
    with pytest.raises(SpecError) as caught:
        load_spec(path, profile="bad")
    assert "model.n_heads" in str(caught.value)


def test_exponent_floats_without_a_dot_are_numbers():
    data = parse_yaml_text("a: 14.8e12\nb: 469e9\nc: 2.2e-4\nd: 12\ne: '3e5'\n", "t")
    assert data == {"a": 14.8e12, "b": 469e9, "c": 2.2e-4, "d": 12, "e": "3e5"}


def test_deep_merge_replaces_lists_and_changed_sources():
    base = {"a": {"x": 1, "y": [1, 2]}, "data": {"source": "shards", "path": "p"}}
    merged = deep_merge(base, {"a": {"y": [3]}, "data": {"source": "synthetic", "seed": 1}})
    assert merged == {"a": {"x": 1, "y": [3]}, "data": {"source": "synthetic", "seed": 1}}
    assert deep_merge(base, {"data": {"path": "q"}})["data"] == {"source": "shards", "path": "q"}
    assert base["a"]["y"] == [1, 2]  # inputs untouched


def test_overrides_do_not_modify_their_input():
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2", "a.c.d=3"]) == {"a": {"b": 2, "c": {"d": 3}}}
    assert data == {"a": {"b": 1}}


def test_checkpoint_interval_forms():
    assert CheckpointInterval(steps=5).steps == 5
    spec = load_spec(MINIMAL_SPEC, overrides=["checkpoint.interval=auto"])
    assert spec.checkpoint.interval == "auto"
    spec = load_spec(MINIMAL_SPEC, overrides=["checkpoint.interval={minutes: 30}"])
    assert spec.checkpoint.interval.minutes == 30


def test_an_unknown_key_with_a_capital_is_reported_not_crashed_on():
    # found by the property test: 'A' was taken for a union-branch marker and dropped from the path
    with pytest.raises(SpecError) as err:
        validate_mapping({"A": 0}, "t")
    assert any(p.path == "A" and p.message == "unknown key" for p in err.value.problems)
