"""Read a job spec: YAML file -> profile overlay -> ``--set`` overrides -> typed ``JobSpec``.

All problems are collected and raised together as one ``SpecError`` so that ``orch validate``
can print every one of them. Nothing here imports Ray, torch or Kubernetes.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

import orchestrator.spec.schema as schema_module
from orchestrator.errors import FieldProblem, SpecError
from orchestrator.spec.schema import JobSpec

MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_VALUES = 100_000  # after aliases are expanded; a real spec holds a few hundred


class _SpecYamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``14.8e12`` and ``2.2e-4`` as floats (YAML 1.2 style).

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so the natural
    way of writing token counts would otherwise arrive as strings.
    """


_FLOAT = re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d[\d_]*)?(?:[eE][-+]?\d+)$|^[-+]?\d[\d_]*\.\d*$")
_SpecYamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _no_duplicate_keys(loader: _SpecYamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_SpecYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def expanded_size(value: Any, limit: int) -> int:
    """How many values ``value`` holds once YAML aliases are expanded, counted without expanding them
    (each shared node is measured once); stops counting past ``limit``."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = limit + 1  # a cycle (a recursive alias) counts as too big
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(node)] = total
        return total

    try:
        return size(value)
    except RecursionError:
        return limit + 1


def check_expanded_size(data: Any, source: str) -> None:
    """Refuse a "billion laughs": a few kilobytes of anchors and aliases that expand to billions of values."""
    if expanded_size(data, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise SpecError(
            [
                FieldProblem(
                    "",
                    f"the YAML expands to more than {MAX_SPEC_VALUES} values (anchors and "
                    "aliases that repeat each other)",
                    fix="write the values out; a spec holds a few hundred",
                )
            ],
            source,
        )


def parse_yaml_text(text: str, source: str) -> dict:
    """Parse YAML text to a mapping, turning every failure into a ``SpecError``."""
    try:
        data = yaml.load(text, Loader=_SpecYamlLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            [FieldProblem("", f"YAML syntax error at {where}{problem}", fix="correct the YAML at that line")],
            source,
        ) from None
    if data is None:
        raise SpecError(
            [FieldProblem("", "the file is empty", fix="write a job spec; see jobs/v3_pretrain.yaml")], source
        )
    check_expanded_size(data, source)
    if not isinstance(data, dict):
        raise SpecError(
            [
                FieldProblem(
                    "",
                    f"the top level must be a mapping of sections, not a {type(data).__name__}",
                    fix="start the file with 'name:', 'model:', ... (see jobs/v3_pretrain.yaml)",
                )
            ],
            source,
        )
    return data


def read_spec_file(path: str | Path) -> dict:
    """Read a spec file's raw mapping; unreadable, binary, empty or huge files are ``SpecError``."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise SpecError([FieldProblem("", "file not found", fix="check the path")], source)
    if path.is_dir():
        raise SpecError([FieldProblem("", "is a directory, not a spec file", fix="name a .yaml file")], source)
    if not path.is_file():  # /dev/zero, a FIFO, a socket: no size to check, maybe no end
        raise SpecError([FieldProblem("", "is not a regular file", fix="name a .yaml file")], source)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_SPEC_BYTES:
                raise SpecError(
                    [
                        FieldProblem(
                            "",
                            f"file is {size} bytes; specs are at most {MAX_SPEC_BYTES}",
                            fix="a spec is a few kilobytes of YAML",
                        )
                    ],
                    source,
                )
            raw = handle.read(MAX_SPEC_BYTES + 1)  # never more, even if the file grows meanwhile
    except OSError as exc:
        raise SpecError([FieldProblem("", f"cannot read the file: {exc.strerror}")], source) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([FieldProblem("", f"file is over {MAX_SPEC_BYTES} bytes; specs are at most that")], source)
    if b"\x00" in raw:
        raise SpecError(
            [FieldProblem("", "binary file (contains NUL bytes), not YAML", fix="name a YAML spec")], source
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            [FieldProblem("", f"not UTF-8 text (byte {exc.start})", fix="save the file as UTF-8")], source
        ) from None
    return parse_yaml_text(text, source)


# --------------------------------------------------------------------------- profiles and overrides


DISCRIMINATOR_KEYS = ("source",)


def _same_kind(base: dict, overlay: dict) -> bool:
    """A mapping that names a different ``source`` is a different kind of thing: it replaces."""
    return all(overlay.get(k, base.get(k)) == base.get(k) for k in DISCRIMINATOR_KEYS)


def deep_merge(base: dict, overlay: dict) -> dict:
    """Overlay ``overlay`` on ``base``: mappings merge recursively (unless they change ``source``);
    lists and scalars replace."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and _same_kind(merged[key], value):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_profile(data: dict, profile: str | None, source: str) -> dict:
    """Strip ``profiles`` and overlay the chosen one (validated afterwards like the base)."""
    data = dict(data)
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise SpecError([FieldProblem("profiles", "must be a mapping of profile name to overlay", profiles)], source)
    if profile is None:
        return data
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none defined"
        hint = difflib.get_close_matches(profile, list(profiles), n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"use one of: {known}"
        raise SpecError(
            [FieldProblem("--profile", f"no profile named '{profile}' (profiles: {known})", fix=fix)], source
        )
    overlay = profiles[profile]
    if not isinstance(overlay, dict):
        raise SpecError([FieldProblem(f"profiles.{profile}", "a profile must be a mapping", overlay)], source)
    return deep_merge(data, overlay)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.path=value``; the value is read as YAML (``16`` is an int, ``[1,2]`` a list)."""
    if "=" not in text:
        raise SpecError(
            [FieldProblem("--set", "expected dotted.path=value", text, fix="e.g. --set parallelism.pipeline=2")]
        )
    key, raw = text.split("=", 1)
    parts = [p for p in re.sub(r"\[(\d+)\]", r".\1", key.strip()).split(".")]  # phases[0] = phases.0
    if not key.strip() or any(not p for p in parts):
        raise SpecError([FieldProblem("--set", "empty path segment", text, fix="e.g. --set training.seed=7")])
    try:
        value = yaml.load(raw, Loader=_SpecYamlLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    check_expanded_size(value, "--set")
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``--set`` overrides; list items are addressed by index (``phases.0.tokens=1e9``)."""
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = _descend(node, part, parts[: depth + 1], text)
        _assign(node, parts[-1], value, parts, text)
    return data


def _descend(node: Any, part: str, so_far: list[str], text: str) -> Any:
    where = ".".join(so_far)
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            node[part] = {}
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise SpecError(
        [
            FieldProblem(
                where,
                "cannot descend into this value with --set",
                text,
                fix="address mappings by key and lists by index",
            )
        ]
    )


def _assign(node: Any, part: str, value: Any, parts: list[str], text: str) -> None:
    if isinstance(node, dict):
        node[part] = value
    elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
        node[int(part)] = value
    else:
        raise SpecError(
            [
                FieldProblem(
                    ".".join(parts),
                    "cannot set this path",
                    text,
                    fix="address mappings by key and lists by existing index",
                )
            ]
        )


# --------------------------------------------------------------------------- validation


def validate_mapping(data: dict, source: str = "") -> JobSpec:
    """Validate a raw mapping into a ``JobSpec`` or raise ``SpecError`` listing every problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in _drop_other_union_branches(exc.errors()):
            problems += _problems_from_pydantic(err, data)
        raise SpecError(_dedupe(problems), source) from None


def load_spec(path: str | Path, profile: str | None = None, overrides: list[str] | None = None) -> JobSpec:
    """The one entry point every command uses to read a spec."""
    source = str(path)
    data = read_spec_file(path)
    data = apply_profile(data, profile, source)
    data = apply_overrides(data, overrides or [])
    return validate_mapping(data, source)


def _dedupe(problems: list[FieldProblem]) -> list[FieldProblem]:
    seen, kept = set(), []
    for p in problems:
        key = (p.path, p.message)
        if key not in seen:
            seen.add(key)
            kept.append(p)
    return kept


_TAGGED_UNION_TAGS = {
    "int",
    "float",
    "str",
    "list",
    "dict",
    "bool",
    "none",
    "literal",
    "function-after",
    "synthetic",
    "shards",
    "function-before",
    "function-wrap",
    "tuple",
    "chain",
}


_MODEL_NAMES = frozenset(
    name for name, value in vars(schema_module).items() if isinstance(value, type) and issubclass(value, BaseModel)
)


def _clean_loc(loc: tuple) -> list:
    """Drop pydantic's union-branch markers (``int``, ``BatchRamp``, ``literal['auto']``) from a path."""
    return [part for part in loc if not _is_branch(part)]


def _is_branch(part: object) -> bool:
    # a model's class name marks a union branch; a user's own key that merely starts with a capital
    # (an unknown key 'A') is a path element and must stay
    return isinstance(part, str) and (
        part in _TAGGED_UNION_TAGS or part.startswith(("literal[", "function-")) or part in _MODEL_NAMES
    )


def _drop_other_union_branches(errors: list[dict]) -> list[dict]:
    """For a value checked against a union (``auto`` or a mapping; an int or a ramp), keep only the
    errors of the branch the value was meant for: the mapping branch when a mapping was given,
    the scalar branches otherwise. Without this a user reads 'Input should be auto' for a typo
    inside a mapping."""
    kept, model_fields_at = [], {}
    for err in errors:
        loc = err["loc"]
        branch_at = next((i for i, part in enumerate(loc) if _is_branch(part)), None)
        if branch_at is None:
            kept.append(err)
            continue
        model = _branch_model(str(loc[branch_at]))
        given = _value_at(err, loc[:branch_at])
        if model is not None:
            model_fields_at[loc[:branch_at]] = sorted(model.model_fields)
        if isinstance(given, dict) == (model is not None) or given is _MISSING:
            kept.append(err)
    for err in kept:  # a scalar given where a mapping was also allowed: say so in the fix
        fields = model_fields_at.get(err["loc"][:-1])
        if fields and err["type"] == "literal_error":
            err["ctx"] = {"expected": f"{err['ctx']['expected']}, or a mapping with keys {', '.join(fields)}"}
    return kept


def _branch_model(part: str) -> type[BaseModel] | None:
    """The spec model a union-branch marker names (``BatchRamp``, ``function-after[_x(), BatchRamp]``)."""
    name = part.rstrip("]").split(", ")[-1] if part.startswith("function-") else part
    found = getattr(schema_module, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


_MISSING = object()


def _value_at(err: dict, loc: tuple) -> object:
    """The user's value at the union field, recovered from the error (input of the branch)."""
    if len(err["loc"]) == len(loc) + 1:
        return err.get("input", _MISSING)
    return {}  # the error is deeper inside a mapping branch: a mapping was given


def _problems_from_pydantic(err: dict, data: dict) -> list[FieldProblem]:
    loc = _clean_loc(err["loc"])
    path = ".".join(str(p) for p in loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return [_unknown_key(loc, data)]
    if kind == "missing":
        where = f"the '{_parent(loc)}' section" if len(loc) > 1 else "the top level of the spec"
        return [FieldProblem(path, "required field is missing", fix=f"add '{loc[-1]}:' to {where}")]
    message = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be", 1)
    if message.startswith("@"):
        return [_tagged_problem(line, loc, data) for line in message.splitlines()]
    return [
        FieldProblem(
            path,
            message,
            value if not isinstance(value, dict) else None,
            fix=_fix_for(kind, err) or f"see the field '{path}' in docs/spec.md",
        )
    ]


def _tagged_problem(line: str, loc: list, data: dict) -> FieldProblem:
    """A cross-field problem raised by ``schema.fail``: ``@field: message``."""
    field, message = line[1:].split(": ", 1)
    full = loc + [field]
    value = data
    for part in full:
        value = (
            value.get(part)
            if isinstance(value, dict)
            else (value[part] if isinstance(value, list) and isinstance(part, int) and part < len(value) else None)
        )
    shown = value if not isinstance(value, (dict, list)) else None
    path = ".".join(str(p) for p in full)
    wrong, _, fix = message.partition("; ")  # most checks in schema.py write 'what is wrong; how to fix'
    if fix.split(" ", 1)[0] in _FIX_VERBS:
        message = wrong
    else:
        fix = ""
    return FieldProblem(path, message, shown, fix=fix or f"see the field '{path}' in docs/spec.md")


_FIX_VERBS = frozenset(
    {
        "use",
        "raise",
        "lower",
        "choose",
        "remove",
        "set",
        "add",
        "give",
        "write",
        "make",
        "reduce",
        "increase",
        "drop",
        "pick",
        "put",
        "list",
        "change",
    }
)


def _parent(loc: list) -> str:
    return ".".join(str(p) for p in loc[:-1]) or "top"


def _unknown_key(loc: list, data: dict) -> FieldProblem:
    path = ".".join(str(p) for p in loc)
    key = str(loc[-1])
    allowed = _allowed_keys(loc[:-1])
    hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if hint:
        fix = f"did you mean '{hint[0]}'?"
    else:
        fix = "remove it; allowed keys here: " + ", ".join(allowed) if allowed else "remove it"
    return FieldProblem(path, "unknown key", fix=fix)


def _allowed_keys(parent_loc: list) -> list[str]:
    """The field names the spec model accepts at ``parent_loc`` (indices and branches skipped)."""
    model: type[BaseModel] | None = JobSpec
    for part in parent_loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field else None
    return sorted(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found:
            return found
    return None


_SUFFIXED = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMbBgGtT])\s*$")
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def _number_fix(kind: str, value: object) -> str:
    """A fix for a number written as text: ``"1"`` -> ``1``; ``4K`` -> ``4096`` (or 4000); ``14.8T`` -> ``14.8e12``."""
    if not isinstance(value, str):
        return ""
    text = value.strip().replace(",", "").replace("_", "")
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return f"write {int(text)} without quotes (a number, not a string)"
    if re.fullmatch(r"[-+]?[0-9]*\.[0-9]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+", text):
        return f"write {text} without quotes (a number, not a string)"
    match = _SUFFIXED.match(value)
    if not match:
        return ""
    number, unit = float(match[1]), match[2].lower()
    if kind.startswith("int") and unit == "k" and number.is_integer():
        return f"write {int(number) * 1024} ({value} as {int(number)} x 1024), or {int(number * 1000)} for thousands"
    scaled = number * _SCALE[unit]
    exponent = {"k": 3, "m": 6, "b": 9, "g": 9, "t": 12}[unit]
    return (
        f"write {int(scaled)}"
        if kind.startswith("int") and scaled.is_integer()
        else f"write {match[1]}e{exponent} ({value} as a number)"
    )


def _fix_for(kind: str, err: dict) -> str:
    ctx = err.get("ctx") or {}
    number = _number_fix(kind, err.get("input")) if kind.startswith(("int_", "float_", "literal_error")) else ""
    if number:
        return number
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), None)
        word = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        return f"use a value {word} {bound}"
    if kind.startswith(("int_", "float_", "bool_", "string_type", "list_type", "dict_type", "model_type")):
        want = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "string": "a string",
            "list": "a list",
            "dict": "a mapping",
            "model": "a mapping",
        }[kind.split("_")[0]]
        return f"write {want} here"
    if kind == "literal_error":
        return f"use one of {ctx.get('expected', '')}"
    if kind == "string_pattern_mismatch":
        return "use lowercase letters, digits and dashes, starting with a letter or digit"
    if kind in ("too_short", "too_long"):
        return "change the number of items"
    if kind == "union_tag_invalid":
        return f"use one of {ctx.get('expected_tags', '')}"
    return ""
