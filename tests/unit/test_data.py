"""Data sources: the Markov chain's known entropy, token shards read by ranges, per-replica slicing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orchestrator.cli.main import main
from orchestrator.errors import OrchError
from orchestrator.spec.loader import load_spec
from orchestrator.train.data import MarkovSource, micro_batches
from orchestrator.train.prepare import prepare_shards
from orchestrator.train.reference import ReferenceTrainer
from orchestrator.train.shards import ShardSource
from tests.conftest import V3_SPEC


def test_markov_entropy_rate_matches_the_empirical_rate():
    source = MarkovSource(32, seed=3, branching=3)
    rows = source.windows(0, 200, 200)
    counts = np.zeros((32, 32))
    for row in rows.numpy():
        np.add.at(counts, (row[:-1], row[1:]), 1)
    probs = counts / counts.sum(1, keepdims=True).clip(min=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_state = -np.nansum(np.where(probs > 0, probs * np.log(probs), 0), axis=1)
    empirical = (counts.sum(1) / counts.sum() * per_state).sum()
    assert abs(empirical - source.entropy_rate()) < 0.05
    assert 0 < source.entropy_rate() < math.log(3) + 1e-9


def test_windows_depend_only_on_their_start_token():
    source = MarkovSource(64, seed=1)
    whole = source.windows(200, 6, 20)
    assert torch.equal(source.windows(260, 2, 20), whole[3:5])
    assert not torch.equal(MarkovSource(64, seed=2).windows(200, 6, 20), whole)


def test_replicas_take_disjoint_slices_of_the_global_batch():
    source = MarkovSource(64, seed=1)
    r0 = torch.cat(micro_batches(source, 1000, 8, 2, 0, 2, 10))
    r1 = torch.cat(micro_batches(source, 1000, 8, 2, 1, 2, 10))
    assert torch.equal(torch.cat([r0, r1]), source.windows(1000, 8, 10))


def test_prepare_shards_and_read_them_back(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("hello world, " * 100)
    out = tmp_path / "shards"
    assert main(["data", "prepare", str(text), "--out", str(out), "--shard-tokens", "500"]) == 0
    files = sorted(out.glob("*.bin"))
    assert len(files) == 3 and (out / "manifest.json").exists()
    source = ShardSource(str(out), "uint16", 256)
    assert source.total_tokens == 1300
    sample = source.windows(13, 1, 13)[0]
    assert bytes(sample.tolist()) == b"hello world, "
    across = source.windows(494, 1, 13)[0]  # a window spanning shards 0 and 1
    assert bytes(across.tolist()) == (b"hello world, " * 100)[494:507]
    assert source.bytes_read == 2 * 13 * 2  # two windows of 13 uint16 tokens: nothing else was read
    wrapped = source.windows(1295, 1, 10)[0]  # past the end: the next epoch starts at token 0
    assert bytes(wrapped.tolist()) == (b"hello world, " * 100)[1295:] + b"hello"
    with pytest.raises(OrchError, match="already holds"):
        prepare_shards([str(text)], str(out))


def test_training_on_shards_learns(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    prepare_shards([str(text)], str(tmp_path / "d"))
    spec = load_spec(
        V3_SPEC, profile="local", overrides=[f"data={{source: shards, path: {tmp_path / 'd'}, dtype: uint16}}"]
    )
    torch.set_num_threads(1)
    history = ReferenceTrainer(spec, data_parallel=2).train(25)
    assert history[-1]["loss"] < history[0]["loss"] - 1.0


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(OrchError, match="no \\*.bin token shards"):
        ShardSource(str(tmp_path), "uint16", 256)


def test_shards_from_s3_train_exactly_like_local_ones(tmp_path, monkeypatch):
    from orchestrator.checkpoint.objects import S3ObjectStore
    from tests.s3server import s3_env, s3_server

    text = tmp_path / "t.txt"
    text.write_text("pack my box with five dozen liquor jugs. " * 300)
    prepare_shards([str(text)], str(tmp_path / "d"), shard_tokens=4000)
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    with s3_server() as endpoint:
        for key, value in s3_env(endpoint).items():
            monkeypatch.setenv(key, value)
        bucket = S3ObjectStore("data", "bytes", endpoint)
        bucket.ensure_bucket()
        for f in sorted((tmp_path / "d").iterdir()):
            bucket.put(f.name, f.read_bytes())
        torch.set_num_threads(1)
        runs = []
        for path in ("s3://data/bytes", str(tmp_path / "d")):
            spec = load_spec(
                V3_SPEC, profile="local", overrides=[f"data={{source: shards, path: {path}, dtype: uint16}}"]
            )
            runs.append([m["loss"] for m in ReferenceTrainer(spec, data_parallel=2).train(3)])
    assert runs[0] == runs[1]
    assert not (tmp_path / "home" / "data-cache").exists()  # streamed by ranges, never downloaded
