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
from orchestrator.checkpoint.store import CheckpointStore
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


def command(metrics: Path, uri: str, job: str, steps: int, port: int, overrides: list[str]) -> list[str]:
    cmd = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc-per-node",
        "4",
        "--master-port",
        str(port),
        "-m",
        "orchestrator.train.standalone",
        str(V3_SPEC),
        "--profile",
        "local",
        "--max-steps",
        str(steps),
        "--metrics",
        str(metrics),
        "--job-id",
        job,
        "--set",
        f"checkpoint.uri={uri}",
    ]
    for override in overrides:
        cmd += ["--set", override]
    return cmd


def train(
    workdir: Path,
    uri: str,
    job: str,
    steps: int,
    env: dict | None = None,
    port: int = 29581,
    overrides: tuple[str, ...] = ("checkpoint.interval={steps: 5}",),
) -> list[dict]:
    metrics = workdir / f"{job}-{time.time_ns()}.jsonl"
    proc = subprocess.run(
        command(metrics, uri, job, steps, port, list(overrides)),
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
        env={**os.environ, "DS_ACCELERATOR": "cpu", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (workdir / f"{job}.log").write_text(proc.stdout + proc.stderr)
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def test_resume_from_s3_equals_the_uninterrupted_run(s3, tmp_path, straight):
    _, env = s3
    first = train(tmp_path, "s3://orch-ckpt/resume", "job-a", 12, env)  # commits steps 5 and 10
    store = CheckpointStore(S3ObjectStore("orch-ckpt", "resume/job-a"), "job-a")
    assert store.committed()[-2:] == [5, 10] and store.verify(10) == []
    assert first[-1]["checkpoint_step"] == 10
    resumed = train(tmp_path, "s3://orch-ckpt/resume", "job-a", 8, env)  # the two steps after 10 are redone
    assert resumed[0]["step"] == 11 and resumed[-1]["step"] == 18
    # the run that never stopped (the module's, which saves no checkpoint: saving changes no loss)
    assert [m["loss"] for m in resumed] == [straight[m["step"]] for m in resumed]  # bit-identical
    assert all(m["checkpoint_stall_s"] < 1.0 for m in first)


def test_a_corrupt_shard_is_named_and_resume_falls_back(tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    train(tmp_path, uri, "job-c", 12, port=29582)
    objects = FileObjectStore(tmp_path / "store" / "job-c")
    store = CheckpointStore(objects, "job-c")
    objects.put(store.manifest(10).files[2].key, b"not a checkpoint")
    problems = store.verify(10)
    assert len(problems) == 1 and "rank_00002.safetensors is corrupt" in problems[0]
    resumed = train(tmp_path, uri, "job-c", 3, port=29582)
    assert resumed[0]["step"] == 6  # fell back to step 5
    assert "rank_00002.safetensors is corrupt" in (tmp_path / "job-c.log").read_text()
    assert 10 not in store.committed() and store.verify(5) == []  # the damaged step was rejected


def test_a_writer_killed_mid_upload_leaves_the_previous_checkpoint_latest(s3, tmp_path):
    endpoint, env = s3
    objects = S3ObjectStore("orch-ckpt", "killed", endpoint)
    store = CheckpointStore(objects, "killed")
    for rank in range(2):
        store.put_shard(10, rank, os.urandom(2048), attempt=1)
    store.commit(10, 2, {"world_size": 2}, 1000.0, {}, attempt=1)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.upload_shard", "orch-ckpt", "killed", "20", "150"],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    deadline = time.time() + 60
    while not objects.client.list_multipart_uploads(Bucket="orch-ckpt", Prefix="killed/").get("Uploads"):
        assert time.time() < deadline and writer.poll() is None, "the upload never started"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert store.latest().step == 10 and store.verify(10) == []
    cleaned = store.collect_garbage(attempt=2, margin_s=0)  # the killed writer's attempt (0) is over
    assert cleaned["aborted_uploads"] >= 1
    assert objects.client.list_multipart_uploads(Bucket="orch-ckpt", Prefix="killed/").get("Uploads", []) == []
    assert store.committed() == [10]


STRAIGHT_STEPS = 40


def kill_gang(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (torch elastic starts each worker in a session of its own)."""
    import psutil

    parent = psutil.Process(proc.pid)
    for process in [*parent.children(recursive=True), parent]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[int, float]:
    """Losses of a run that never stopped (no checkpoints at all)."""
    workdir = tmp_path_factory.mktemp("straight")
    metrics = train(
        workdir,
        f"file://{workdir / 'store'}",
        "straight",
        STRAIGHT_STEPS,
        port=29583,
        overrides=("checkpoint.interval={steps: 1000}",),
    )
    return {m["step"]: m["loss"] for m in metrics}


@pytest.mark.parametrize(
    ("interval", "wanted"),
    [
        (["checkpoint.interval={minutes: 0.05}"], 3),  # every 3 s of rank 0's clock: three commits, then kill
        # Young/Daly on a spot pool at the highest rate a spec takes (an MTBF of 8.6 s): the interval
        # follows the measured save duration; uninterrupted, this run commits 10 times in its 40 steps
        # on 2 cores (the first at step 13, the third at 25), so three commits come well before its end
        (["checkpoint.interval=auto", "resources.pools.1.interruptions_per_node_day=10000"], 3),
    ],
    ids=["minutes", "auto-spot"],
)
def test_a_killed_run_saving_on_time_resumes_bit_identically(tmp_path, straight, interval, wanted):
    uri, job = f"file://{tmp_path / 'store'}", "timed"
    overrides = [*interval, "checkpoint.retention={keep_last: 2, keep_every: 10}"]
    metrics = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(
        command(metrics, uri, job, STRAIGHT_STEPS, 29584, overrides),
        cwd=tmp_path,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    commits: set[int] = set()
    while len(commits) < wanted:  # kill the whole gang once enough checkpoints committed
        assert proc.poll() is None and time.time() < deadline, f"only {sorted(commits)} committed"
        time.sleep(0.2)
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        commits = {json.loads(line)["checkpoint_step"] for line in lines if json.loads(line)["checkpoint_step"]}
    kill_gang(proc)
    store = CheckpointStore(FileObjectStore(tmp_path / "store" / job), job)
    kept = store.committed()
    assert kept and all(store.verify(step) == [] for step in kept)
    assert max(kept) >= max(commits)
    remaining = min(5, STRAIGHT_STEPS - max(kept))
    resumed = train(tmp_path, uri, job, remaining, port=29584, overrides=tuple(overrides))
    assert resumed[0]["step"] == max(kept) + 1
    assert [m["loss"] for m in resumed] == [straight[m["step"]] for m in resumed]  # bit-identical


def test_a_run_restarted_after_its_final_commit_trains_nothing_and_succeeds(tmp_path):
    """A node lost after the last step's commit but before the job's success was recorded: the next
    attempt restores a checkpoint whose progress is past the last phase (it crashed with IndexError
    looking for the next step's batch) and must finish at once."""
    uri, job = f"file://{tmp_path / 'store'}", "final"
    every_step = ("checkpoint.interval={steps: 1}", "phases.0.tokens=2000")
    first = train(tmp_path, uri, job, 100, port=29585, overrides=every_step)
    store = CheckpointStore(FileObjectStore(tmp_path / "store" / job), job)
    assert store.latest().step == first[-1]["step"]  # the final step is committed
    metrics = tmp_path / "again.jsonl"
    again = subprocess.run(
        command(metrics, uri, job, 100, 29585, list(every_step)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    assert again.returncode == 0, again.stderr[-3000:]
    trained = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    assert [m for m in trained if m.get("step")] == []  # nothing trained twice
