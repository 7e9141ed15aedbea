"""Garbage collection never touches a save in flight: a slow rank's upload interleaved with rank 0's
commit, retention and garbage collection, on file:// and on S3 (moto's server over real HTTP).

The interleaving is forced, not timed: the slow rank's upload reads its payload through a stream
that blocks in the middle until rank 0 has committed and collected, so the upload is provably in
flight (a partial file on file://, an open multipart upload with a part on S3) while GC runs.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from dataclasses import asdict

import pytest

from orchestrator.checkpoint.objects import FileObjectStore, S3ObjectStore
from orchestrator.checkpoint.store import CheckpointStore, ShardRecord, receipt_key, sha256_of, shard_key
from tests.s3server import s3_server_in_environment

MESH = {"world_size": 4}
MB = 1024 * 1024


class HeldStream(io.BytesIO):
    """A payload whose reads stop after ``release_after`` bytes until ``release`` is set."""

    def __init__(self, data: bytes, release_after: int):
        super().__init__(data)
        self.release_after, self.started, self.release = release_after, threading.Event(), threading.Event()

    def read(self, size: int = -1) -> bytes:
        if self.tell() >= self.release_after:
            self.started.set()
            assert self.release.wait(60), "never released"
        return super().read(size if size is not None and size >= 0 else -1)


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server_in_environment() as endpoint:
        yield endpoint


@pytest.fixture(params=["file", "s3"])
def objects(request, tmp_path, s3_endpoint):
    if request.param == "file":
        return FileObjectStore(tmp_path / "ckpt")
    store = S3ObjectStore("orch-gc", f"run-{os.urandom(4).hex()}", s3_endpoint, chunk_mb=5, concurrency=1)
    store.ensure_bucket()
    return store


def in_flight(objects) -> bool:
    if isinstance(objects, S3ObjectStore):
        uploads = objects.client.list_multipart_uploads(Bucket=objects.bucket, Prefix=objects.prefix + "/")
        return bool(uploads.get("Uploads"))
    return any(p.name.endswith(".partial") for p in objects.root.rglob("*"))


def test_a_slow_ranks_upload_survives_rank_0s_commit_and_collection(objects):
    store = CheckpointStore(objects, "job")
    for rank in range(4):  # leftovers of attempt 1, which crashed while saving step 15
        store.put_shard(15, rank, b"stale" * 10, attempt=1)
    for rank in range(4):  # attempt 2: every rank saved step 10
        store.put_shard(10, rank, os.urandom(100), attempt=2)
    for rank in range(3):  # ranks 0-2 already saved step 20 too
        store.put_shard(20, rank, os.urandom(100), attempt=2)
    payload = os.urandom(12 * MB)
    slow = HeldStream(payload, release_after=6 * MB)  # rank 3: past its first part, then held
    failure: list[BaseException] = []

    def rank3_upload():
        try:
            objects.put(shard_key(20, 3, 2), slow)
        except BaseException as exc:  # reported below
            failure.append(exc)

    uploader = threading.Thread(target=rank3_upload)
    uploader.start()
    assert slow.started.wait(60)
    deadline = time.time() + 30
    while not in_flight(objects):  # S3: CreateMultipartUpload runs in boto3's transfer thread
        assert time.time() < deadline, "the upload never showed up as in flight"
        time.sleep(0.05)
    # rank 0, meanwhile: commits step 10, applies retention, collects garbage (no age margin at all:
    # the rules alone must keep the slow upload safe)
    store.commit(10, 4, MESH, 0.0, {}, attempt=2)
    store.apply_retention(keep_last=1)
    result = store.collect_garbage(attempt=2, margin_s=0)
    assert in_flight(objects), "the slow rank's upload was aborted"
    assert {k.split("/")[0] for k in result["removed"]} == {"step_00000015"}  # attempt 1's leftovers only
    slow.release.set()
    uploader.join(60)
    assert not failure
    record = ShardRecord(shard_key(20, 3, 2), 3, len(payload), sha256_of(payload), 2, 20)
    objects.put(receipt_key(20, 3, 2), json.dumps(asdict(record)).encode())  # rank 3's receipt, after its shard
    store.commit(20, 4, MESH, 0.0, {}, attempt=2)
    assert store.verify(20) == [] and store.committed() == [10, 20]
