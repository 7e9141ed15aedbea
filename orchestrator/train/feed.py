"""What each rank reads: data by pipeline role, a replica's slice only, the next step prefetched.

- The first pipeline stage embeds tokens: each of its data-parallel replicas reads its slice of
  the step (one contiguous token range, ``data.replica_range``) through its own source.
- The last stage computes the losses from the token ids that travel with the activations
  (``model.OutputLayer``), so it reads nothing; DeepSpeed's pipeline engine still pulls a
  ``(inputs, labels)`` pair per micro-batch there, so it gets a one-element placeholder.
- Middle stages get no iterator at all (DeepSpeed does not ask them).
"""

from __future__ import annotations

import dataclasses

import torch

from orchestrator.spec.schema import JobSpec, ShardData, SyntheticData
from orchestrator.train.data import MarkovSource, replica_range
from orchestrator.train.progress import Progress, Schedule, StepShape
from orchestrator.train.shards import Prefetcher, ShardSource


def make_source(spec: JobSpec, path: str | None = None):
    """The job's data source: the Markov chain, or shards read by ranges (local or ``s3://``)."""
    data = spec.data
    if isinstance(data, SyntheticData):
        return MarkovSource(spec.model.vocab_size, data.seed, data.branching, data.concentration)
    assert isinstance(data, ShardData)
    return ShardSource(path or data.path, data.dtype, spec.model.vocab_size)


class DataFeed:
    """One rank's data: built from its pipeline stage and data-parallel replica."""

    def __init__(
        self, spec: JobSpec, stage: int, stages: int, replica: int, data_parallel: int, path: str | None = None
    ):
        self.spec, self.replica, self.data_parallel = spec, replica, data_parallel
        self.first, self.last = stage == 0, stage == stages - 1
        self.micro_batch = spec.parallelism.micro_batch_size
        self.source = make_source(spec, path) if self.first else None
        self.prefetcher = Prefetcher(self.source) if self.source is not None else None

    @property
    def bytes_read(self) -> int:
        return getattr(self.source, "bytes_read", 0)

    def _range(self, position: int, shape: StepShape) -> tuple[int, int, int]:
        start, count = replica_range(position, shape.global_batch, self.data_parallel, self.replica, shape.sample_len)
        return start, count, shape.sample_len

    def iterator(self, schedule: Schedule, progress: Progress):
        """The DeepSpeed data iterator for the step at ``progress`` (None on middle stages); starts
        reading the following step in the background."""
        shape = schedule.next_step(progress)
        if not (self.first or self.last):
            return None
        micro = shape.global_batch // (self.data_parallel * self.micro_batch)
        placeholder = torch.zeros((self.micro_batch, 1), dtype=torch.int64)
        if not self.first:
            return iter([(placeholder, placeholder)] * micro)
        batches = self.prefetcher.get(*self._range(progress.data_position, shape)).split(self.micro_batch)
        following = dataclasses.replace(progress)
        schedule.advance(following, shape)
        if not schedule.finished(following):
            self.prefetcher.prefetch(*self._range(following.data_position, schedule.next_step(following)))
        return iter([(b, placeholder) for b in batches])

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
