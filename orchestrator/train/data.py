"""Training data addressed by token position, so the data position is one integer across phases.

A step consumes ``global_batch`` windows of ``sample_len`` tokens (``seq_len + 1 + mtp_depth``)
starting at the position, and the position advances by exactly that many tokens. Counting tokens
rather than samples keeps the stream contiguous when the sample length changes between phases
(4K pretraining, then 32K and 128K context extension): the first long sample starts where the last
short one ended. Data-parallel replica r takes its contiguous slice of the step's windows, so each
replica reads one contiguous token range per step, disjoint from every other replica's. The stream
is deterministic per replica, identical between a sharded run and a single process, and resumable
from the position alone (part of the checkpointed training state).

Sources:
- ``MarkovSource``: a seeded random Markov chain over the vocabulary. Its entropy rate is known
  exactly, so the loss has a floor to approach (the test of learning). The window starting at
  token t depends only on (seed, t).
- ``ShardSource`` (``orchestrator.train.shards``): token shards read by byte ranges from a local
  folder or ``s3://``, never downloaded whole.

Only the first pipeline stage reads data: the token ids travel with the activations to the last
stage, whose loss reads its targets from them (``model.OutputLayer``); see ``DataFeed``.
"""

from __future__ import annotations

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

    def windows(self, start: int, count: int, length: int) -> torch.Tensor:
        """``count`` windows of ``length`` tokens from token ``start``; each depends only on (seed, its start)."""
        rows = np.empty((count, length), dtype=np.int64)
        last = self.successors.shape[1] - 1
        for r in range(count):
            rng = np.random.default_rng([self.seed, start + r * length])
            u = rng.random(length)
            state = int(np.searchsorted(self.stationary_cdf, u[0]).clip(max=self.vocab_size - 1))
            rows[r, 0] = state
            for t in range(1, length):
                pick = min(int(np.searchsorted(self.cumulative_np[state], u[t])), last)
                state = int(self.successors[state, pick])
                rows[r, t] = state
        return torch.from_numpy(rows)


def replica_slice(global_batch: int, data_parallel: int, replica: int) -> tuple[int, int]:
    """(offset, count) in windows of the slice one data-parallel replica takes from a step's global batch."""
    per_replica = global_batch // data_parallel
    return replica * per_replica, per_replica


def replica_range(
    position: int, global_batch: int, data_parallel: int, replica: int, sample_len: int
) -> tuple[int, int]:
    """(first token, window count) a replica reads for the step starting at token ``position``."""
    offset, count = replica_slice(global_batch, data_parallel, replica)
    return position + offset * sample_len, count


def micro_batches(
    source, position: int, global_batch: int, data_parallel: int, replica: int, micro_batch_size: int, sample_len: int
) -> list[torch.Tensor]:
    start, count = replica_range(position, global_batch, data_parallel, replica, sample_len)
    return list(source.windows(start, count, sample_len).split(micro_batch_size))
