"""Token shards read by byte ranges, from a local folder or ``s3://``, with the next read prefetched.

The V3 corpus is 14.8T uint32 tokens, about 59 TB: no rank can download it. A replica's step is one
contiguous token range (``data.replica_range``), so a step costs one ranged read per shard the
range touches (``GetObject`` with ``Range: bytes=a-b`` on S3, ``pread`` locally) and nothing else
is ever read. ``bytes_read`` counts the payload bytes each reader fetched (tests assert on it).

Shards are ``*.bin`` files of native little-endian uint16/uint32 tokens, concatenated in file-name
order (``orch data prepare`` writes them); the token count of each comes from its size, so only a
listing is needed to open a data set. Epochs wrap around the concatenation.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from orchestrator.train.data import DataError


class LocalRanges:
    """Byte ranges of files in a local folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.bytes_read = 0

    def sizes(self) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in sorted(self.root.glob("*.bin"))}

    def read(self, name: str, offset: int, length: int) -> bytes:
        with open(self.root / name, "rb") as handle:
            data = os.pread(handle.fileno(), length, offset)
        self.bytes_read += len(data)
        return data


class S3Ranges:
    """Byte ranges of objects under ``s3://bucket/prefix`` (endpoint from ``AWS_ENDPOINT_URL``)."""

    def __init__(self, uri: str):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise DataError(f"data.path: {uri} needs a bucket: s3://bucket/prefix")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.uri = uri
        self.bytes_read = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def client(self):
        client = getattr(self._local, "client", None)
        if client is None:  # one client per thread: boto3 clients are built per session
            import boto3

            client = boto3.session.Session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
            self._local.client = client
        return client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def sizes(self) -> dict[str, int]:
        from botocore.exceptions import BotoCoreError, ClientError

        found, prefix = {}, f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(prefix) :]
                    if name.endswith(".bin") and "/" not in name:
                        found[name] = item["Size"]
        except (BotoCoreError, ClientError) as exc:
            raise DataError(f"data.path: cannot list {self.uri}: {exc}") from exc
        return dict(sorted(found.items()))

    def read(self, name: str, offset: int, length: int) -> bytes:
        response = self.client.get_object(
            Bucket=self.bucket, Key=self._key(name), Range=f"bytes={offset}-{offset + length - 1}"
        )
        data = response["Body"].read()
        if len(data) != length:
            raise DataError(f"data: {self.uri}/{name} returned {len(data)} bytes for a {length}-byte range")
        with self._lock:
            self.bytes_read += len(data)
        return data


def open_ranges(path: str):
    return S3Ranges(path) if path.startswith("s3://") else LocalRanges(path)


class ShardSource:
    """Concatenated token shards, read by ranges; ``windows`` as ``MarkovSource.windows``."""

    def __init__(self, path: str, dtype: str, vocab_size: int, ranges=None):
        self.ranges = ranges or open_ranges(path)
        self.dtype = np.dtype(dtype)
        sizes = self.ranges.sizes()
        if not sizes:
            raise DataError(f"data.path: no *.bin token shards in {path}; run 'orch data prepare'")
        self.names = list(sizes)
        self.offsets = np.cumsum([0] + [sizes[n] // self.dtype.itemsize for n in self.names])
        self.vocab_size = vocab_size

    @property
    def total_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def bytes_read(self) -> int:
        return self.ranges.bytes_read

    def _span(self, begin: int, end: int) -> np.ndarray:
        """Tokens [begin, end) of the concatenation (end <= total), one ranged read per shard touched."""
        parts, position = [], begin
        while position < end:
            shard = int(np.searchsorted(self.offsets, position, side="right") - 1)
            local = position - int(self.offsets[shard])
            take = min(end - position, int(self.offsets[shard + 1]) - position)
            raw = self.ranges.read(self.names[shard], local * self.dtype.itemsize, take * self.dtype.itemsize)
            parts.append(np.frombuffer(raw, dtype=self.dtype))
            position += take
        return np.concatenate(parts)

    def windows(self, start: int, count: int, length: int) -> torch.Tensor:
        total = self.total_tokens
        if total < length:
            raise DataError(f"data.path: shards hold {total} tokens, fewer than one sample of {length}")
        need, begin, parts = count * length, start % total, []
        while need:  # wrap around the end of the data: the next epoch
            take = min(need, total - begin)
            parts.append(self._span(begin, begin + take))
            need, begin = need - take, 0
        tokens = np.concatenate(parts).astype(np.int64).reshape(count, length)
        if int(tokens.max()) >= self.vocab_size:
            raise DataError(f"data: token id {int(tokens.max())} >= model.vocab_size {self.vocab_size}")
        return torch.from_numpy(tokens)


class Prefetcher:
    """Reads the next step's windows in a background thread while the current step trains."""

    def __init__(self, source):
        self.source = source
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orch-data")
        self._pending: tuple[tuple[int, int, int], Future] | None = None

    def get(self, start: int, count: int, length: int) -> torch.Tensor:
        """The windows asked for: from the prefetch when it was for exactly these, else read now."""
        key = (start, count, length)
        if self._pending is not None and self._pending[0] == key:
            result = self._pending[1].result()
            self._pending = None
            return result
        return self.source.windows(start, count, length)

    def prefetch(self, start: int, count: int, length: int) -> None:
        if self._pending is not None:
            self._pending[1].cancel()
        self._pending = ((start, count, length), self._pool.submit(self.source.windows, start, count, length))

    def close(self) -> None:
        """Stop after the read in flight (if any) completes, so no thread outlives the feed."""
        self._pool.shutdown(wait=True)
