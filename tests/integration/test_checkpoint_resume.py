"""Checkpoints from real training processes (torchrun + DeepSpeed + gloo) to a real S3 endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.checkpoint.objects import FileObjectStore, S3ObjectStore
from orchestrator.checkpoint.store import CheckpointStore, shard_key
from tests.conftest import V3_SPEC
from tests.s3server import s3_env, s3_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server() as endpoint:
        env = s3_env(endpoint)
        store = S3ObjectStore("orch-ckpt", "", endpoint)
        os.environ.update(env)
        store.ensure_bucket()
        yield endpoint, env


def train(workdir: Path, uri: str, job: str, steps: int, env: dict | None = None, port: int = 29581) -> list[dict]:
    metrics = workdir / f"{job}-{time.time_ns()}.jsonl"
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "4", "--master-port", str(port),
           "-m", "orchestrator.train.standalone", str(V3_SPEC), "--profile", "local", "--max-steps", str(steps),
           "--metrics", str(metrics), "--job-id", job, "--set", f"checkpoint.uri={uri}",
           "--set", "checkpoint.interval={steps: 5}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (workdir / f"{job}.log").write_text(proc.stdout + proc.stderr)
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def test_resume_from_s3_equals_the_uninterrupted_run(s3, tmp_path):
    _, env = s3
    first = train(tmp_path, "s3://orch-ckpt/resume", "job-a", 12, env)  # commits steps 5 and 10
    store = CheckpointStore(S3ObjectStore("orch-ckpt", "resume/job-a"), "job-a")
    assert store.committed()[-2:] == [5, 10] and store.verify(10) == []
    assert first[-1]["checkpoint_step"] == 10
    resumed = train(tmp_path, "s3://orch-ckpt/resume", "job-a", 8, env)  # the two steps after 10 are redone
    straight = train(tmp_path, "s3://orch-ckpt/resume", "job-b", 18, env)
    assert resumed[0]["step"] == 11 and resumed[-1]["step"] == 18
    by_step = {m["step"]: m["loss"] for m in straight}
    assert [m["loss"] for m in resumed] == [by_step[m["step"]] for m in resumed]  # bit-identical
    assert all(m["checkpoint_stall_s"] < 1.0 for m in first)


def test_a_corrupt_shard_is_named_and_resume_falls_back(tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    train(tmp_path, uri, "job-c", 12, port=29582)
    objects = FileObjectStore(tmp_path / "store" / "job-c")
    objects.put(shard_key(10, 2), b"not a checkpoint")
    problems = CheckpointStore(objects, "job-c").verify(10)
    assert len(problems) == 1 and "rank_00002.pt is corrupt" in problems[0]
    resumed = train(tmp_path, uri, "job-c", 3, port=29582)
    assert resumed[0]["step"] == 6  # fell back to step 5
    assert "rank_00002.pt is corrupt" in (tmp_path / "job-c.log").read_text()


def test_a_writer_killed_mid_upload_leaves_the_previous_checkpoint_latest(s3, tmp_path):
    endpoint, env = s3
    objects = S3ObjectStore("orch-ckpt", "killed", endpoint)
    store = CheckpointStore(objects, "killed")
    for rank in range(2):
        store.put_shard(10, rank, os.urandom(2048))
    store.commit(10, 2, {"world_size": 2}, 1000.0, {})
    writer = subprocess.Popen([sys.executable, "-m", "tests.helpers.upload_shard", "orch-ckpt", "killed", "20", "150"],
                              cwd=ROOT, env={**os.environ, **env})
    deadline = time.time() + 60
    while not objects.client.list_multipart_uploads(Bucket="orch-ckpt", Prefix="killed/").get("Uploads"):
        assert time.time() < deadline and writer.poll() is None, "the upload never started"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert store.latest().step == 10 and store.verify(10) == []
    cleaned = store.collect_garbage()
    assert cleaned["aborted_uploads"] >= 1
    assert objects.client.list_multipart_uploads(Bucket="orch-ckpt", Prefix="killed/").get("Uploads", []) == []
    assert store.committed() == [10]
