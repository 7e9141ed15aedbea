"""Property: any mutation of a valid spec yields a valid spec and plan, or a typed OrchError.

Never a KeyError, TypeError, ZeroDivisionError or any other crash: bad input must always come
back as a clean, user-facing error.
"""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import OrchError
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import apply_profile, validate_mapping
from tests.conftest import MINIMAL_SPEC, V3_SPEC

BASES = [yaml.safe_load(MINIMAL_SPEC.read_text()), apply_profile(yaml.safe_load(V3_SPEC.read_text()), "local", "v3")]

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from([0, 1, 2, 3, 4, 8, 16, 64, -1, 0.5, "auto", "balanced", "dualpipe", "sigmoid", 1e30]),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(spec, path, action, value):
    spec = copy.deepcopy(spec)
    if not path:
        return value if action == "replace" else spec
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif action == "replace":
        parent[key] = value
    elif action == "add_key" and isinstance(parent[key], dict):
        parent[key]["unexpected"] = value
    return spec


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(spec))
        path = draw(st.sampled_from(paths))
        spec = _mutate(spec, path, draw(st.sampled_from(["delete", "replace", "replace", "add_key"])), draw(ODD_VALUES))
    return spec


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_specs_validate_or_fail_cleanly(spec):
    try:
        if not isinstance(spec, dict):
            raise OrchError("not a mapping")
        plan = make_plan(validate_mapping(spec, "mutated"))
    except OrchError as err:
        assert str(err)  # a message a user can read
        return
    assert plan.mesh.world_size >= 1 and plan.total_gpu_hours >= 0
    assert sum(len(s.blocks) for s in plan.stages) == plan.spec.model.n_layers
