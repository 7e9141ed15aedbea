"""The checkpoint store on file:// and on a real S3 HTTP endpoint (moto's server, through boto3)."""

from __future__ import annotations

import json
import os
import time

import pytest

from orchestrator.checkpoint.objects import FileObjectStore, S3ObjectStore, open_object_store
from orchestrator.checkpoint.store import (
    CheckpointError,
    CheckpointStore,
    CommitFailed,
    key_step_attempt,
    receipt_key,
    retained,
    shard_key,
)
from tests.s3server import s3_server_in_environment

MESH = {"pipeline": 2, "data": 2, "expert": 2, "tensor": 1, "world_size": 4}


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server_in_environment() as endpoint:
        yield endpoint


@pytest.fixture(params=["file", "s3"])
def objects(request, tmp_path, s3_endpoint):
    if request.param == "file":
        return FileObjectStore(tmp_path / "ckpt")
    store = S3ObjectStore("orch-test", f"run-{os.urandom(4).hex()}", s3_endpoint, chunk_mb=5, concurrency=4)
    store.ensure_bucket()
    return store


def write_checkpoint(store: CheckpointStore, step: int, world: int = 4, commit: bool = True, attempt: int = 1) -> None:
    for rank in range(world):
        store.put_shard(step, rank, os.urandom(1000 + rank) + bytes([step % 256]), attempt)
    if commit:
        store.commit(step, world, MESH, tokens=step * 100.0, progress={"step": step}, attempt=attempt)


def test_manifest_is_the_commit_point(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 10)
    write_checkpoint(store, 20, commit=False)  # shards and receipts, no manifest
    assert store.committed() == [10]
    assert store.latest(MESH).step == 10
    manifest = store.manifest(10)
    assert [f.rank for f in manifest.files] == [0, 1, 2, 3] and manifest.tokens == 1000.0
    assert store.verify(10) == []


def test_commit_waits_for_every_rank(objects):
    store = CheckpointStore(objects, "job")
    for rank in range(3):
        store.put_shard(5, rank, b"x" * 10, attempt=1)
    with pytest.raises(CheckpointError, match=r"ranks \[3\] did not finish"):
        store.commit(5, 4, MESH, 0.0, {}, timeout_s=0.5, attempt=1)
    assert store.committed() == []


def test_corrupt_and_missing_shards_are_named(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 10)
    write_checkpoint(store, 20)
    objects.put(shard_key(20, 2, 1), b"garbage")
    problems = store.verify(20)
    assert len(problems) == 1 and "rank_00002.safetensors is corrupt" in problems[0]
    objects.delete([shard_key(20, 3, 1)])
    assert any("rank_00003.safetensors is missing" in p for p in store.verify(20))
    assert store.verify(10) == []


def test_retention_keeps_last_k_and_the_first_of_every_window(objects):
    store = CheckpointStore(objects, "job")
    for step in (5, 10, 15, 20, 25, 30):
        write_checkpoint(store, step, world=1)
    removed = store.apply_retention(keep_last=2, keep_every=10)
    assert store.committed() == [5, 10, 20, 25, 30] and removed == [15]
    assert not [o for o in objects.list("step_00000015/")]  # shards gone with the manifest


@pytest.mark.parametrize(
    "steps",
    [
        [7, 13, 19, 26, 33, 41, 47, 55, 61],  # a minutes interval: no step is a multiple of 20
        [3, 11, 24, 52, 58, 83, 89],  # auto: the interval grows and shrinks with the measured cost
    ],
)
def test_keep_every_keeps_each_windows_first_commit_whatever_the_interval(steps):
    kept: list[int] = []
    for step in steps:  # committed one at a time, retention after each commit, as rank 0 does
        kept = sorted(retained(kept + [step], keep_last=2, keep_every=20))
    firsts = {min(s for s in steps if s // 20 == w) for w in {s // 20 for s in steps}}
    assert set(kept) == firsts | set(steps[-2:])


def test_garbage_collection_removes_what_no_writer_can_be_on(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 10, attempt=1)
    write_checkpoint(store, 20, commit=False, attempt=1)  # attempt 1 crashed while saving 20
    write_checkpoint(store, 15, commit=False, attempt=2)  # attempt 2: abandoned below its newest commit
    write_checkpoint(store, 30, attempt=2)
    write_checkpoint(store, 40, commit=False, attempt=2)  # attempt 2: still being written
    young = store.collect_garbage(attempt=2, margin_s=3600)
    assert young["removed"] == []  # nothing old enough: a slow writer may still be on any of it
    result = store.collect_garbage(attempt=2, margin_s=0)
    assert {key_step_attempt(k) for k in result["removed"]} == {(20, 1), (15, 2)}
    assert len(objects.list("step_00000040/")) == 8 and store.committed() == [10, 30]
    assert store.verify(10) == [] and store.verify(30) == []


def test_a_commit_counts_only_its_own_attempts_receipts(objects):
    store = CheckpointStore(objects, "job")
    for rank in range(4):  # attempt 1 wrote every shard of step 20, then died before committing
        store.put_shard(20, rank, b"old" + bytes([rank]), attempt=1)
    for rank in range(3):
        store.put_shard(20, rank, b"new" + bytes([rank]), attempt=2)
    forged = json.loads(objects.get(receipt_key(20, 3, 1)))  # a stale receipt copied into attempt 2's folder
    objects.put(receipt_key(20, 3, 2), json.dumps(forged).encode())
    with pytest.raises(CommitFailed, match=r"ranks \[3\]"):
        store.commit(20, 4, MESH, 0.0, {}, timeout_s=0.3, attempt=2)
    store.put_shard(20, 3, b"new" + bytes([3]), attempt=2)
    manifest = store.commit(20, 4, MESH, 0.0, {}, attempt=2)
    assert manifest.attempt == 2 and {f.attempt for f in manifest.files} == {2}
    assert [store.read_shard(manifest, r) for r in range(4)] == [b"new" + bytes([r]) for r in range(4)]


def test_a_commit_past_its_deadline_is_abandoned(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 10)
    for rank in range(3):
        store.put_shard(20, rank, b"x", attempt=1)
    with pytest.raises(CommitFailed, match="before the deadline"):
        store.commit(20, 4, MESH, 0.0, {}, attempt=1, deadline=time.time() + 0.3)
    store.put_shard(20, 3, b"x", attempt=1)
    with pytest.raises(CommitFailed, match="after the deadline"):
        store.commit(20, 4, MESH, 0.0, {}, attempt=1, deadline=time.time() - 1)
    assert store.committed() == [10]


def test_attempts_are_numbered_above_every_earlier_one(objects):
    store = CheckpointStore(objects, "job")
    assert [store.register_attempt() for _ in range(3)] == [1, 2, 3]
    assert CheckpointStore(objects, "job").register_attempt() == 4


def test_old_manifests_are_upgraded_on_read(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 7, world=1)
    data = json.loads(objects.get("step_00000007/manifest.json"))
    del data["format_version"], data["progress"], data["attempt"]  # as an early writer would have left it
    objects.put("step_00000007/manifest.json", json.dumps(data).encode())
    assert store.manifest(7).format_version == 1 and store.manifest(7).attempt == 0
    assert not store.manifest(7).loadable  # format 1 shards are pickles: listed and verified, never loaded


def test_multipart_upload_round_trip(s3_endpoint):
    store = S3ObjectStore("orch-test", "multipart", s3_endpoint, chunk_mb=5, concurrency=4)
    store.ensure_bucket()
    payload = os.urandom(23 * 1024 * 1024)  # five parts
    store.put("big.bin", payload)
    assert store.get("big.bin") == payload
    uploads = store.client.list_multipart_uploads(Bucket="orch-test").get("Uploads", [])
    assert uploads == []  # completed, none left open


def test_abandoned_multipart_uploads_are_aborted(s3_endpoint):
    store = S3ObjectStore("orch-test", "abandoned", s3_endpoint)
    store.ensure_bucket()
    upload = store.client.create_multipart_upload(Bucket="orch-test", Key="abandoned/step_00000009/rank_00000.pt")
    store.client.upload_part(
        Bucket="orch-test",
        Key="abandoned/step_00000009/rank_00000.pt",
        PartNumber=1,
        UploadId=upload["UploadId"],
        Body=b"x" * (5 * 1024 * 1024),
    )
    assert CheckpointStore(store, "job").collect_garbage(attempt=1, margin_s=0)["aborted_uploads"] == 1
    assert store.client.list_multipart_uploads(Bucket="orch-test", Prefix="abandoned/").get("Uploads", []) == []


def test_uri_resolution(tmp_path):
    assert isinstance(open_object_store("s3://bucket/a/b"), S3ObjectStore)
    assert open_object_store("s3://bucket/a/b").prefix == "a/b"
    assert open_object_store(f"file://{tmp_path}").root == tmp_path
    assert open_object_store("checkpoints", home=tmp_path).root == tmp_path / "checkpoints"


def test_a_new_job_sees_nothing_of_its_neighbours(tmp_path):
    FileObjectStore(tmp_path / "store" / "job-a").put("step_00000001/x.json", b"{}")
    assert FileObjectStore(tmp_path / "store" / "job-b").list() == []
    assert CheckpointStore(FileObjectStore(tmp_path / "store" / "job-b"), "job-b").latest() is None


def test_an_emergency_save_reports_whether_it_beat_its_deadline(tmp_path):
    import time

    import torch

    from orchestrator.checkpoint.session import RankCheckpointer

    store = CheckpointStore(FileObjectStore(tmp_path / "e"), "job")
    ckpt = RankCheckpointer(store, 0, 1, {"world_size": 1})
    state = {"w": torch.randn(1000)}
    assert ckpt.save_sync(1, state, 0.0, {}, deadline=time.time() + 60) is True
    assert ckpt.save_sync(2, {"w": torch.randn(20_000_000)}, 0.0, {}, deadline=time.time() - 1) is False
    ckpt.wait()


def test_listing_a_file_store_while_another_rank_deletes(tmp_path):
    # seen in CI: one rank listed checkpoints while another's retention deleted a step, and the
    # listing crashed on a file that vanished between finding it and reading its size
    import threading
    import time

    store = FileObjectStore(tmp_path / "ckpt")
    stop = threading.Event()

    def churn():
        n = 0
        while not stop.is_set():
            keys = [f"step_{n % 3:08d}/rank_{r:05d}.pt" for r in range(20)]
            for key in keys:
                store.put(key, b"x")
            store.delete(keys)
            n += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 3.0
        while time.time() < deadline:
            for info in store.list("step_"):
                assert info.size == 1
    finally:
        stop.set()
        thread.join(timeout=10)
