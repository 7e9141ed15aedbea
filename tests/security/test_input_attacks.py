"""Hostile and careless spec input: an alias bomb, infinite and absurd numbers, files that are not
files (/dev/zero, a FIFO, a 2 GB sparse file), URLs that smuggle credentials or climb out of ORCH_HOME,
and path traversal in names and checkpoint keys. Each is a clean error (exit 2, the field named, no
traceback, a bounded message) and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from orchestrator.checkpoint.objects import FileObjectStore, StorageError
from orchestrator.errors import FieldProblem, SpecError
from orchestrator.spec.loader import MAX_SPEC_BYTES, load_spec, parse_yaml_text
from tests.conftest import MINIMAL_SPEC

BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
)  # 10^9 values in 700 bytes


def validate(tmp_path, *args, text: str | None = None):
    """`orch validate` in a subprocess with a private ORCH_HOME; (exit status, stderr, files written)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    if text is not None:
        (tmp_path / "spec.yaml").write_text(text)
        args = (str(tmp_path / "spec.yaml"), *args)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_HOME": str(home)},
        timeout=120,
    )
    return out.returncode, out.stdout + out.stderr, sorted(p.name for p in home.rglob("*"))


def assert_clean(status: int, text: str, *fragments: str) -> None:
    assert status == 2, text[-2000:]
    assert "Traceback" not in text and len(text) < 4000, text[-2000:]
    for fragment in fragments:
        assert fragment in text, text[-2000:]


def minimal_with(**replace) -> str:
    data = yaml.safe_load(MINIMAL_SPEC.read_text())
    data.update(replace)
    return yaml.safe_dump(data)


def test_an_alias_bomb_at_an_echoed_field_is_refused_before_it_expands(tmp_path):
    spec = MINIMAL_SPEC.read_text().replace("name: minimal", BOMB + "\nname: *a8")
    status, text, written = validate(tmp_path, text=spec)
    assert_clean(status, text, "expands to more than")
    assert "state.db" not in written


def test_an_alias_bomb_in_an_override_is_refused(tmp_path):
    status, text, _ = validate(
        tmp_path, str(MINIMAL_SPEC), "--set", "name=" + "[" + ", ".join(["[" + ", ".join(["x"] * 10) + "]"] * 10) + "]"
    )
    assert_clean(status, text, "name")  # a plain (small) list is an ordinary type error
    nested = (
        "{a0: &a0 [x, x, x, x, x, x, x, x, x, x], "
        + ", ".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9))
        + "}"
    )
    status, text, _ = validate(tmp_path, str(MINIMAL_SPEC), "--set", "name=" + nested)
    assert_clean(status, text, "expands to more than")


def test_an_error_never_renders_an_unbounded_value():
    shared = ["x" * 1000] * 10
    for _ in range(8):
        shared = [shared] * 10  # 10^9 leaves, built in microseconds because every level is shared
    rendered = FieldProblem("name", "must be a string", shared).render()
    assert len(rendered) < 200 and "(got [[" in rendered
    assert len(FieldProblem("name", "bad", "y" * 10**7).render()) < 200


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1e400"])
def test_infinite_and_nan_numbers_are_refused(tmp_path, value):
    status, text, _ = validate(tmp_path, str(MINIMAL_SPEC), "--set", f"phases.0.tokens={value}")
    assert_clean(status, text, "phases.0.tokens")


@pytest.mark.parametrize(
    "override, field",
    [
        ("phases.0.tokens=1e30", "phases.0.tokens"),
        ("training.lr_schedule.warmup_steps=10000000000000", "warmup_steps"),
        ("resources.nodes=1000000000000", "resources.nodes"),
        ("cost.price_per_gpu_hour=1e300", "price_per_gpu_hour"),
        ("checkpoint.retention.keep_last=99999999999", "keep_last"),
        ("parallelism.data=999999999999", "data"),
        ("training.seed=99999999999999999999", "seed"),
    ],
)
def test_absurd_numbers_are_refused_with_the_bound(tmp_path, override, field):
    status, text, _ = validate(tmp_path, str(MINIMAL_SPEC), "--set", override)
    assert_clean(status, text, field)
    assert "less than or equal to" in text or "at most" in text


def test_steps_of_1e30_is_refused(tmp_path):
    data = yaml.safe_load(MINIMAL_SPEC.read_text())
    data["phases"][0].pop("tokens", None)
    data["phases"][0]["steps"] = 10**30
    status, text, _ = validate(tmp_path, text=yaml.safe_dump(data))
    assert_clean(status, text, "phases.0.steps", "1000000000")


def test_files_that_are_not_files_are_refused_before_reading(tmp_path):
    status, text, _ = validate(tmp_path, "/dev/zero")
    assert_clean(status, text, "not a regular file")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    status, text, _ = validate(tmp_path, str(fifo))  # would block forever if opened and read
    assert_clean(status, text, "not a regular file")
    sparse = tmp_path / "huge.yaml"
    with sparse.open("wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB, no disk used: refused by its size, never read
    status, text, _ = validate(tmp_path, str(sparse))
    assert_clean(status, text, f"at most {MAX_SPEC_BYTES}")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://s3.example.com",
        "http://user:secret@s3.example.com",
        "http://s3.example.com:99999",
        "http://s3.example.com/?x=1",
        "http://",
        "http://s3.example.com\r\nX-Injected: 1",
        "http:// s3.example.com",
    ],
)
def test_bad_endpoint_urls_are_refused(tmp_path, url):
    status, text, _ = validate(
        tmp_path,
        str(MINIMAL_SPEC),
        "--set",
        f"checkpoint.s3_endpoint_url={url!r}" if "\r" not in url else f"checkpoint.s3_endpoint_url={url}",
    )
    assert_clean(status, text, "s3_endpoint_url")


@pytest.mark.parametrize(
    "uri",
    [
        "../../etc",
        "checkpoints/../../..",
        "file://relative/path",
        "s3://UPPER/x",
        "s3://a/x",
        "gs://bucket/x",
        "check points",
        "file:///x/../../etc",
    ],
)
def test_checkpoint_uris_that_escape_or_are_malformed_are_refused(tmp_path, uri):
    status, text, _ = validate(tmp_path, str(MINIMAL_SPEC), "--set", f"checkpoint.uri={uri}")
    assert_clean(status, text, "checkpoint.uri")


def test_good_urls_still_validate():
    spec = load_spec(
        MINIMAL_SPEC,
        None,
        ["checkpoint.uri=s3://orch-checkpoints/run-1", "checkpoint.s3_endpoint_url=http://127.0.0.1:9000"],
    )
    assert spec.checkpoint.s3_endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "override",
    ["name=../../etc", "name=a/b", "team=../x", "phases.0.name=../p", "resources.pools.0.name=..", "name=" + "a" * 64],
)
def test_path_traversal_and_overlong_names_are_refused(tmp_path, override):
    status, text, written = validate(tmp_path, str(MINIMAL_SPEC), "--set", override)
    assert_clean(status, text, override.split("=")[0])
    assert written == [] or "jobs" not in written


@pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/passwd", "", "step_1/../../x"])
def test_checkpoint_keys_cannot_leave_the_store(tmp_path, key):
    store = FileObjectStore(tmp_path / "store")
    with pytest.raises(StorageError, match="invalid object key"):
        store.put(key, b"x")
    with pytest.raises(StorageError):
        store.get(key)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "x").exists()


def test_yaml_errors_stay_short():
    with pytest.raises(SpecError) as caught:
        parse_yaml_text("name: [" + "x, " * 100_000, "spec.yaml")
    assert len(str(caught.value)) < 1000
