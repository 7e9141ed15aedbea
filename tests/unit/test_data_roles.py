"""Data by role: only the first pipeline stage reads, each replica only its slice, by ranges.

The S3 test runs moto's server over real HTTP; bytes are counted per rank from the payloads of the
ranged GetObject responses each rank's reader received.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.train.feed import DataFeed
from orchestrator.train.progress import Progress, Schedule
from tests.conftest import V3_SPEC

CORPUS_TOKENS = 200_000
SHARD_TOKENS = 30_000


def _write_shards(folder, seed: int = 0) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    tokens = np.random.default_rng(seed).integers(0, 256, CORPUS_TOKENS, dtype=np.uint32)
    for i, start in enumerate(range(0, CORPUS_TOKENS, SHARD_TOKENS)):
        (folder / f"shard_{i:05d}.bin").write_bytes(tokens[start : start + SHARD_TOKENS].tobytes())
    return tokens


def _spec(path: str, phases: str | None = None):
    overrides = [f"data={{source: shards, path: {path}, dtype: uint32}}"]
    if phases:
        overrides.append(f"phases={phases}")
    return load_spec(V3_SPEC, profile="local", overrides=overrides)


def _run(feed: DataFeed, schedule: Schedule, progress: Progress, steps: int) -> list[list[torch.Tensor]]:
    """Take ``steps`` steps of one rank's data; returns each step's micro-batch inputs (None: no iterator)."""
    taken = []
    for _ in range(steps):
        shape = schedule.next_step(progress)
        iterator = feed.iterator(schedule, progress)
        taken.append(None if iterator is None else [inputs for inputs, _ in iterator])
        schedule.advance(progress, shape)
    return taken


def test_each_rank_reads_only_its_slice_from_s3(tmp_path, monkeypatch):
    from orchestrator.checkpoint.objects import S3ObjectStore
    from tests.s3server import s3_env, s3_server

    corpus = _write_shards(tmp_path / "shards")
    with s3_server() as endpoint:
        for key, value in s3_env(endpoint).items():
            monkeypatch.setenv(key, value)
        bucket = S3ObjectStore("data", "corpus", endpoint)
        bucket.ensure_bucket()
        for f in sorted((tmp_path / "shards").iterdir()):
            bucket.put(f.name, f.read_bytes())
        spec = _spec("s3://data/corpus")
        plan = make_plan(spec)  # PP2 x DP2 (EP2) on 4 ranks
        mesh, steps = plan.mesh, 3
        read, delivered = {}, {}
        for rank in range(mesh.world_size):
            placement = mesh.placement(rank)
            feed = DataFeed(spec, placement.stage, mesh.pipeline, placement.data_rank, mesh.data)
            schedule, progress = Schedule(spec, mesh.data), Progress()
            delivered[rank] = _run(feed, schedule, progress, steps)
            feed.close()
            read[rank] = (placement.stage, placement.data_rank, feed.bytes_read)
    schedule, progress, expected = Schedule(spec, mesh.data), Progress(), {0: 0, 1: 0}
    windows = []
    for _ in range(steps + 1):  # the last step's reads prefetched the step after it
        shape = schedule.next_step(progress)
        per_replica = shape.global_batch // mesh.data
        for replica in (0, 1):
            expected[replica] += per_replica * shape.sample_len * 4
        windows.append((progress.data_position, shape))
        schedule.advance(progress, shape)
    for rank, (stage, replica, nbytes) in read.items():
        if stage == 0:
            assert nbytes == expected[replica], f"rank {rank} read {nbytes} bytes"
        else:  # the last stage: one-element placeholders, no reads
            assert nbytes == 0 and all(b.numel() == 1 for step in delivered[rank] for b in step)
    assert sum(n for _, _, n in read.values()) < corpus.nbytes / 20  # nobody downloaded the corpus
    # what stage 0's replicas were given is exactly their slices of the stream, in order
    first_stage = [r for r, (stage, _, _) in read.items() if stage == 0]
    for step, (position, shape) in enumerate(windows[:steps]):
        got = torch.cat([torch.cat(delivered[r][step]) for r in sorted(first_stage, key=lambda r: read[r][1])])
        want = corpus[position : position + shape.global_batch * shape.sample_len].reshape(shape.global_batch, -1)
        assert torch.equal(got, torch.from_numpy(want.astype(np.int64)))


def test_position_counts_tokens_across_phases_and_resume_is_exact(tmp_path):
    corpus = _write_shards(tmp_path / "shards", seed=1)
    phases = (
        "[{name: short, seq_len: 32, global_batch: 8, steps: 3}, {name: long, seq_len: 128, global_batch: 8, steps: 3}]"
    )
    spec = _spec(str(tmp_path / "shards"), phases)
    plan = make_plan(spec)
    mesh = plan.mesh
    replicas = [mesh.placement(r) for r in range(mesh.world_size) if mesh.placement(r).stage == 0]
    stream, resumed = [], []
    for placement in replicas:
        feed = DataFeed(spec, 0, mesh.pipeline, placement.data_rank, mesh.data)
        schedule, progress = Schedule(spec, mesh.data), Progress()
        first = _run(feed, schedule, progress, 4)  # through the phase change
        saved = Progress.from_dict(dataclasses.replace(progress).as_dict())  # as a checkpoint holds it
        rest = _run(feed, schedule, progress, 2)
        feed.close()
        again = DataFeed(spec, 0, mesh.pipeline, placement.data_rank, mesh.data)
        resumed.append(_run(again, Schedule(spec, mesh.data), saved, 2))
        again.close()
        stream.append(first + rest)
        assert all(torch.equal(a, b) for x, y in zip(rest, resumed[-1]) for a, b in zip(x, y))
    # replicas in order, steps in order: the tokens trained are the corpus from token 0, with no gap
    tokens = torch.cat([torch.cat(stream[r][step]).flatten() for step in range(6) for r in range(len(replicas))])
    sample_lens = [34] * 3 + [130] * 3
    assert len(tokens) == sum(8 * n for n in sample_lens)
    assert torch.equal(tokens, torch.from_numpy(corpus[: len(tokens)].astype(np.int64)))
    assert progress.data_position == len(tokens)


def test_a_middle_stage_builds_no_source_and_the_last_reads_nothing(tmp_path):
    _write_shards(tmp_path / "shards")
    spec = _spec(str(tmp_path / "shards"))
    middle = DataFeed(spec, stage=1, stages=3, replica=0, data_parallel=2)
    last = DataFeed(spec, stage=2, stages=3, replica=0, data_parallel=2)
    schedule = Schedule(spec, 2)
    assert middle.source is None and middle.iterator(schedule, Progress()) is None
    labels = list(last.iterator(schedule, Progress()))
    assert last.source is None and last.bytes_read == 0
    assert len(labels) == schedule.next_step(Progress()).global_batch // 2 and labels[0][1].numel() == 1


def test_missing_s3_shards_are_a_clear_error(monkeypatch):
    from orchestrator.errors import OrchError
    from tests.s3server import s3_env, s3_server

    with s3_server() as endpoint:
        for key, value in s3_env(endpoint).items():
            monkeypatch.setenv(key, value)
        from orchestrator.checkpoint.objects import S3ObjectStore

        S3ObjectStore("empty", "", endpoint).ensure_bucket()
        with pytest.raises(OrchError, match="no \\*.bin token shards"):
            DataFeed(_spec("s3://empty/nothing"), 0, 2, 0, 2)
