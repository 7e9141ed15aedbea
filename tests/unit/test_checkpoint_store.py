"""The checkpoint store on file:// and on a real S3 HTTP endpoint (moto's server, through boto3)."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.checkpoint.objects import FileObjectStore, S3ObjectStore, open_object_store
from orchestrator.checkpoint.store import CheckpointError, CheckpointStore, shard_key
from tests.s3server import s3_env, s3_server

MESH = {"pipeline": 2, "data": 2, "expert": 2, "tensor": 1, "world_size": 4}


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server() as endpoint:
        saved = {k: os.environ.get(k) for k in s3_env(endpoint)}
        os.environ.update(s3_env(endpoint))
        yield endpoint
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["file", "s3"])
def objects(request, tmp_path, s3_endpoint):
    if request.param == "file":
        return FileObjectStore(tmp_path / "ckpt")
    store = S3ObjectStore("orch-test", f"run-{os.urandom(4).hex()}", s3_endpoint, chunk_mb=5, concurrency=4)
    store.ensure_bucket()
    return store


def write_checkpoint(store: CheckpointStore, step: int, world: int = 4, commit: bool = True) -> None:
    for rank in range(world):
        store.put_shard(step, rank, os.urandom(1000 + rank) + bytes([step % 256]))
    if commit:
        store.commit(step, world, MESH, tokens=step * 100.0, progress={"step": step})


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
        store.put_shard(5, rank, b"x" * 10)
    with pytest.raises(CheckpointError, match=r"ranks \[3\] did not finish"):
        store.commit(5, 4, MESH, 0.0, {}, timeout_s=0.5)
    assert store.committed() == []


def test_corrupt_and_missing_shards_are_named(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 10)
    write_checkpoint(store, 20)
    objects.put(shard_key(20, 2), b"garbage")
    problems = store.verify(20)
    assert len(problems) == 1 and "rank_00002.pt is corrupt" in problems[0]
    objects.delete([shard_key(20, 3)])
    assert any("rank_00003.pt is missing" in p for p in store.verify(20))
    assert store.verify(10) == []


def test_retention_keeps_last_k_and_every_jth(objects):
    store = CheckpointStore(objects, "job")
    for step in (5, 10, 15, 20, 25, 30):
        write_checkpoint(store, step, world=1)
    removed = store.apply_retention(keep_last=2, keep_every=10)
    assert store.committed() == [10, 20, 25, 30] and removed == [5, 15]
    assert not [o for o in objects.list("step_00000005/")]  # shards gone with the manifest


def test_garbage_collection_removes_uncommitted_steps(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 10)
    write_checkpoint(store, 20, commit=False)
    write_checkpoint(store, 30, commit=False)
    result = store.collect_garbage(in_flight={30})
    assert result["removed_steps"] == [20]
    assert objects.list("step_00000020/") == [] and objects.list("step_00000030/")


def test_old_manifests_are_upgraded_on_read(objects):
    store = CheckpointStore(objects, "job")
    write_checkpoint(store, 7, world=1)
    data = json.loads(objects.get("step_00000007/manifest.json"))
    del data["format_version"], data["progress"]  # as an early writer would have left it
    objects.put("step_00000007/manifest.json", json.dumps(data).encode())
    assert store.manifest(7).format_version == 1


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
    store.client.upload_part(Bucket="orch-test", Key="abandoned/step_00000009/rank_00000.pt", PartNumber=1,
                             UploadId=upload["UploadId"], Body=b"x" * (5 * 1024 * 1024))
    assert CheckpointStore(store, "job").collect_garbage()["aborted_uploads"] == 1
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
