"""#17 item 9: spec errors name the field by the path the user wrote, suggest the number a user meant
(``4K`` -> 4096, ``"1"`` -> 1, ``14.8T`` -> 14.8e12), say "top level" for top-level keys, and every
problem has a fix line."""

from __future__ import annotations

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec.loader import load_spec, validate_mapping
from tests.conftest import V3_SPEC


def problems(*overrides: str) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(V3_SPEC, "local", list(overrides))
    return info.value.problems


def test_list_index_in_brackets_addresses_the_item():
    [p] = problems("phases[0].seq_len=4k")
    assert p.path == "phases.0.seq_len" and "unknown key" not in p.message
    assert load_spec(V3_SPEC, "local", ["phases[0].seq_len=128"]).phases[0].seq_len == 128


@pytest.mark.parametrize(
    "text,fix", [("4K", "write 4096"), ("4k", "or 4000 for thousands"), ("'4096'", "write 4096 without quotes")]
)
def test_a_number_written_as_text_gets_the_number(text, fix):
    [p] = problems(f"phases.0.seq_len={text}")
    assert fix in p.fix


def test_tokens_with_a_suffix():
    [p] = problems("phases.0.tokens=14.8T")
    assert p.fix.startswith("write 14.8e12")


def test_quoted_literal_number():
    [p] = problems("parallelism.zero_stage='1'")
    assert p.message == "must be 0 or 1" and p.value == "1"
    assert p.fix == "write 1 without quotes (a number, not a string)"


def test_top_level_key_missing_says_top_level():
    data = load_spec(V3_SPEC, "local").model_dump(mode="json")
    del data["name"]
    with pytest.raises(SpecError) as info:
        validate_mapping(data)
    [p] = info.value.problems
    assert p.fix == "add 'name:' to the top level of the spec" and "'top' section" not in str(info.value)


def test_every_problem_has_a_fix():
    data = load_spec(V3_SPEC, "local").model_dump(mode="json")
    data["model"]["n_dense_layers"] = 9  # a cross-field check of schema.py
    data["checkpoint"]["uri"] = "ftp://x"
    data["training"]["seed"] = -1
    with pytest.raises(SpecError) as info:
        validate_mapping(data)
    assert len(info.value.problems) >= 3
    assert all(p.fix for p in info.value.problems), str(info.value)
    dense = next(p for p in info.value.problems if p.path == "model.n_dense_layers")
    assert dense.fix == "use at most 4" and "use at most" not in dense.message
