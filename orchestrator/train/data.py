"""Training data addressed by global sample index, so the data position is a single integer.

Step n of a run consumes samples ``[position, position + global_batch)``; data-parallel replica r
takes its contiguous slice of them and splits it into micro-batches. That makes the stream
deterministic per replica, identical between a sharded run and a single process, and resumable
from the position alone (it is part of the checkpointed training state).

Sources:
- ``MarkovSource``: a seeded random Markov chain over the vocabulary. Its entropy rate is known
  exactly, so the loss has a floor to approach (the test of learning).
- ``ShardSource``: memory-mapped token shards (``*.bin`` of uint16/uint32) under a directory; sample i
  is the i-th window of ``sample_len`` tokens of their concatenation. ``orch data prepare`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from orchestrator.errors import OrchError


class DataError(OrchError):
    """The job's data cannot be read."""


class MarkovSource:
    """Each token has ``branching`` successors with Dirichlet(``concentration``) probabilities."""

    def __init__(self, vocab_size: int, seed: int, branching: int = 4, concentration: float = 1.0):
        rng = np.random.default_rng(seed)
        self.vocab_size, self.seed = vocab_size, seed
        branching = min(branching, vocab_size)
        self.successors = np.stack([rng.choice(vocab_size, size=branching, replace=False) for _ in range(vocab_size)])
        self.probs = rng.dirichlet(np.full(branching, concentration), size=vocab_size)
        self.cumulative_np = np.cumsum(self.probs, axis=1)
        self.stationary = self._stationary()
        self.stationary_cdf = np.cumsum(self.stationary)

    def _stationary(self) -> np.ndarray:
        transition = np.zeros((self.vocab_size, self.vocab_size))
        rows = np.repeat(np.arange(self.vocab_size), self.successors.shape[1])
        np.add.at(transition, (rows, self.successors.flatten()), self.probs.flatten())
        pi = np.full(self.vocab_size, 1.0 / self.vocab_size)
        for _ in range(2000):
            nxt = pi @ transition
            if np.abs(nxt - pi).sum() < 1e-12:
                break
            pi = nxt
        return pi

    def entropy_rate(self) -> float:
        """Nats per token of the chain: the lowest achievable next-token loss."""
        per_state = -(self.probs * np.log(np.clip(self.probs, 1e-300, None))).sum(axis=1)
        return float((self.stationary * per_state).sum())

    def samples(self, start: int, count: int, length: int) -> torch.Tensor:
        """Samples ``start .. start+count-1``, each ``length`` tokens; sample i depends only on (seed, i)."""
        rows = np.empty((count, length), dtype=np.int64)
        last = self.successors.shape[1] - 1
        for r, index in enumerate(range(start, start + count)):
            rng = np.random.default_rng([self.seed, index])
            u = rng.random(length)
            state = int(np.searchsorted(self.stationary_cdf, u[0]).clip(max=self.vocab_size - 1))
            rows[r, 0] = state
            for t in range(1, length):
                pick = min(int(np.searchsorted(self.cumulative_np[state], u[t])), last)
                state = int(self.successors[state, pick])
                rows[r, t] = state
        return torch.from_numpy(rows)


class ShardSource:
    """Concatenated memory-mapped token shards in a local directory (sorted by file name)."""

    def __init__(self, directory: str | Path, dtype: str, vocab_size: int):
        directory = Path(directory)
        files = sorted(directory.glob("*.bin"))
        if not files:
            raise DataError(f"data.path: no *.bin token shards in {directory}; run 'orch data prepare'")
        self.arrays = [np.memmap(f, dtype=np.dtype(dtype), mode="r") for f in files]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.vocab_size = vocab_size

    @property
    def total_tokens(self) -> int:
        return int(self.offsets[-1])

    def _tokens(self, begin: int, end: int) -> np.ndarray:
        out, position = [], begin
        while position < end:
            shard = int(np.searchsorted(self.offsets, position, side="right") - 1)
            local = position - self.offsets[shard]
            take = min(end - position, len(self.arrays[shard]) - local)
            out.append(np.asarray(self.arrays[shard][local: local + take]))
            position += take
        return np.concatenate(out)

    def samples(self, start: int, count: int, length: int) -> torch.Tensor:
        per_epoch = self.total_tokens // length
        if per_epoch == 0:
            raise DataError(f"data.path: shards hold {self.total_tokens} tokens, fewer than one sample of {length}")
        rows = []
        for index in range(start, start + count):
            begin = (index % per_epoch) * length  # wrap around: epochs over the shards
            rows.append(self._tokens(begin, begin + length).astype(np.int64))
        batch = torch.from_numpy(np.stack(rows))
        if int(batch.max()) >= self.vocab_size:
            raise DataError(f"data: token id {int(batch.max())} >= model.vocab_size {self.vocab_size}")
        return batch


def fetch_shards(uri: str, cache_root: Path) -> Path:
    """Copy an ``s3://`` shard set (``*.bin`` and ``manifest.json``) into a local cache once, so it can be
    memory-mapped. Files already cached with the same size are kept; each file is written under a
    temporary name and renamed, so ranks fetching at once never read a partial shard."""
    import hashlib

    from orchestrator.checkpoint.objects import FileObjectStore, open_object_store

    remote = open_object_store(uri)
    local = FileObjectStore(Path(cache_root) / hashlib.sha1(uri.encode()).hexdigest()[:16])
    have = {o.key: o.size for o in local.list()}
    wanted = [o for o in remote.list() if o.key.endswith((".bin", "manifest.json")) and "/" not in o.key]
    if not any(o.key.endswith(".bin") for o in wanted):
        raise DataError(f"data.path: no *.bin token shards at {uri}; prepare them with 'orch data prepare' and upload")
    for obj in wanted:
        if have.get(obj.key) != obj.size:
            local.put(obj.key, remote.get(obj.key))
    return local.root


def replica_slice(global_batch: int, data_parallel: int, replica: int) -> tuple[int, int]:
    """(offset, count) of the samples one data-parallel replica takes from a step's global batch."""
    per_replica = global_batch // data_parallel
    return replica * per_replica, per_replica


def micro_batches(source, position: int, global_batch: int, data_parallel: int, replica: int,
                  micro_batch_size: int, sample_len: int) -> list[torch.Tensor]:
    offset, count = replica_slice(global_batch, data_parallel, replica)
    batch = source.samples(position + offset, count, sample_len)
    return list(batch.split(micro_batch_size))
