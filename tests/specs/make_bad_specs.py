"""Regenerate tests/specs/bad/ from tests/specs/good/minimal.yaml (run on purpose, then review the diff).

Each case is a small mutation of the minimal valid spec, or raw bytes, plus the substrings the
error must contain. ``EXPECTED.yaml`` records them; ``tests/unit/test_bad_specs.py`` checks them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

HERE = Path(__file__).parent
BAD = HERE / "bad"


def _set(path: str, value):
    def mutate(spec):
        node = spec
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
        return spec

    return mutate


_DELETE = object()


def _all(*mutations):
    def mutate(spec):
        for m in mutations:
            spec = m(spec)
        return spec

    return mutate


# name -> (mutation or raw text/bytes, expected substrings)
CASES = {
    "empty": ("", ["the file is empty"]),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["binary file"]),
    "not_utf8": (b"name: caf\xe9\n", ["not UTF-8"]),
    "yaml_syntax": ("name: x\nmodel: [1, 2\n", ["YAML syntax error at line"]),
    "yaml_tabs": ("name: x\n\tmodel: {}\n", ["YAML syntax error"]),
    "top_level_list": ("- name: x\n", ["top level must be a mapping"]),
    "top_level_scalar": ("just a string\n", ["top level must be a mapping"]),
    "duplicate_key": ("name: a\nname: b\n", ["duplicate key 'name'"]),
    "missing_model": (_set("model", _DELETE), ["model: required field is missing"]),
    "missing_phases": (_set("phases", _DELETE), ["phases: required field is missing"]),
    "missing_model_dim": (_set("model.dim", _DELETE), ["model.dim: required field is missing", "add 'dim:'"]),
    "unknown_top_key": (lambda s: {**s, "modle": {}}, ["modle: unknown key", "did you mean 'model'"]),
    "unknown_model_key": (_set("model.dimm", 3), ["model.dimm: unknown key", "did you mean 'dim'"]),
    "unknown_parallelism_key": (_set("parallelism.pipline", 2), ["did you mean 'pipeline'"]),
    "unknown_key_no_hint": (_set("checkpoint.zzz", 1), ["checkpoint.zzz: unknown key", "allowed keys here"]),
    "string_for_int": (_set("model.dim", "big"), ["model.dim", "valid integer", "write an integer"]),
    "bool_for_int": (_set("parallelism.pipeline", True), ["parallelism.pipeline", "valid integer"]),
    "float_for_int": (_set("model.n_layers", 4.5), ["model.n_layers", "valid integer"]),
    "numeric_string": (_set("parallelism.expert", "2"), ["parallelism.expert", "valid integer"]),
    "negative_dim": (_set("model.dim", -32), ["model.dim", "greater than 0"]),
    "zero_heads": (_set("model.n_heads", 0), ["model.n_heads", "greater than 0"]),
    "absurd_vocab": (_set("model.vocab_size", 10**12), ["model.vocab_size", "less than or equal to 10000000"]),
    "bad_score_func": (_set("model.score_func", "relu"), ["model.score_func", "'sigmoid' or 'softmax'"]),
    "dense_exceeds_layers": (_set("model.n_dense_layers", 9), ["n_dense_layers (9) exceeds n_layers (4)"]),
    "odd_rope_dim": (_set("model.qk_rope_head_dim", 5), ["qk_rope_head_dim (5) must be even"]),
    "activated_exceeds_routed": (
        _set("model.n_activated_experts", 8),
        ["n_activated_experts (8) exceeds n_routed_experts (4)"],
    ),
    "experts_not_divisible_by_groups": (
        _set("model.n_expert_groups", 3),
        ["n_routed_experts (4) is not divisible by n_expert_groups (3)"],
    ),
    "limited_exceeds_groups": (_set("model.n_limited_groups", 3), ["n_limited_groups (3) exceeds n_expert_groups (2)"]),
    "pipeline_exceeds_layers": (
        _all(_set("resources.nodes", 3), _set("parallelism.pipeline", 6), _set("resources.pools.0.nodes", 3)),
        ["6 stages for 4 blocks"],
    ),
    "experts_not_divisible_by_ep": (
        _all(
            _set("parallelism.expert", 3),
            _set("parallelism.pipeline", 2),
            _set("resources.nodes", 3),
            _set("resources.pools.0.nodes", 3),
        ),
        ["n_routed_experts (4) is not divisible by expert parallelism 3"],
    ),
    "ep_not_dividing_dp": (
        _set("parallelism.expert", 4),
        ["expert parallelism 4 must divide the data-parallel degree 2"],
    ),
    "world_not_divisible_by_pp": (
        _set("parallelism.pipeline", 3),
        ["world size 4 (2 nodes x 2) is not divisible by pipeline x tensor = 3 x 1 = 3"],
    ),
    "data_mismatch": (_set("parallelism.data", 4), ["world size 4 = pipeline 2 x data 2 x tensor 1, not data 4"]),
    "data_zero": (_set("parallelism.data", 0), ["parallelism.data", "positive integer or 'auto'"]),
    "batch_not_divisible": (
        _set("phases.0.global_batch", 5),
        ["5 sequences is not divisible by data-parallel 2 x micro-batch 1 = 2"],
    ),
    "dualpipe_odd_stages": (
        _all(_set("parallelism.schedule", "dualpipe"), _set("parallelism.pipeline", 1)),
        ["DualPipe needs an even number of pipeline stages, got 1"],
    ),
    "dualpipe_odd_micro_batches": (
        _all(_set("parallelism.schedule", "dualpipe"), _set("phases.0.global_batch", 6)),
        ["DualPipe needs an even number of micro-batches per replica; 6 sequences give 3"],
    ),
    "memory_over_budget": (
        _set("resources.accelerator.memory_gb", 0.0001),
        ["resources.accelerator.memory_gb", "GiB per device", "but the accelerator has 0.0001"],
    ),
    "layer_partition_wrong_sum": (
        _set("parallelism.layer_partition", [1, 1]),
        ["2 entries summing to 2", "summing to n_layers 4"],
    ),
    "node_limited_routing_span": (
        _all(
            _set("parallelism.expert", 4),
            _set("parallelism.pipeline", 1),
            _set("resources.gpus_per_node", 1),
            _set("resources.nodes", 4),
            _set("resources.pools.0.nodes", 4),
            _set("model.n_routed_experts", 8),
            _set("phases.0.global_batch", 8),
        ),
        ["spans 4 nodes", "n_expert_groups=2"],
    ),
    "phase_tokens_and_steps": (_set("phases.0.steps", 10), ["give exactly one of tokens or steps"]),
    "phase_no_length": (_set("phases.0.tokens", _DELETE), ["give exactly one of tokens or steps"]),
    "ramp_shrinks": (
        _set("phases.0.global_batch", {"start": 8, "end": 4, "ramp_tokens": 100}),
        ["end (4) is smaller than start (8)"],
    ),
    "phases_empty": (_set("phases", []), ["phases", "at least 1 item"]),
    "duplicate_phase_names": (lambda s: {**s, "phases": s["phases"] * 2}, ["phase names must be unique"]),
    "checkpoint_bad_scheme": (_set("checkpoint.uri", "gs://bucket/x"), ["checkpoint.uri", "s3:// or file://"]),
    "checkpoint_interval_both": (
        _set("checkpoint.interval", {"steps": 5, "minutes": 3}),
        ["exactly one of steps or minutes"],
    ),
    "checkpoint_interval_word": (_set("checkpoint.interval", "often"), ["checkpoint.interval"]),
    "pools_duplicate_names": (
        lambda s: _set("resources.pools", s["resources"]["pools"] * 2)(s),
        ["pool names must be unique; repeated: local"],
    ),
    "pools_too_small": (_set("resources.pools.0.nodes", 1), ["pools hold 1 non-spare nodes", "nodes=2"]),
    "negative_price": (_set("cost.price_per_gpu_hour", -1), ["cost.price_per_gpu_hour", "greater than or equal to 0"]),
    "mfu_above_one": (_set("training.expected_mfu", 1.5), ["training.expected_mfu", "less than or equal to 1"]),
    "bad_job_name": (_set("name", "My Job"), ["name", "lowercase letters, digits and dashes"]),
    "unknown_data_source": (_set("data", {"source": "hdfs"}), ["data", "'synthetic', 'shards'"]),
    "betas_out_of_range": (_set("training.optimizer", {"betas": [0.9, 1.5]}), ["each beta must be in [0, 1)"]),
    "section_wrong_type": (_set("parallelism", "fast"), ["parallelism", "valid dictionary"]),
}


def main() -> None:
    base = yaml.safe_load((HERE / "good" / "minimal.yaml").read_text())
    BAD.mkdir(exist_ok=True)
    for old in BAD.iterdir():
        old.unlink()
    expected = {}
    for name, (case, substrings) in CASES.items():
        path = BAD / f"{name}.yaml"
        if isinstance(case, bytes):
            path.write_bytes(case)
        elif isinstance(case, str):
            path.write_text(case)
        else:
            path.write_text(yaml.safe_dump(case(copy.deepcopy(base)), sort_keys=False))
        expected[path.name] = substrings
    (BAD / "EXPECTED.yaml").write_text(
        "# file -> substrings its error must contain (regenerate with tests/specs/make_bad_specs.py)\n"
        + yaml.safe_dump(expected, sort_keys=True, width=120)
    )
    print(f"wrote {len(expected)} bad specs to {BAD}")


if __name__ == "__main__":
    main()
