"""Checkpoint benchmarks, side by side in one run, on a ~300 MB rank shard.

1. Upload throughput: orch's shard upload (sha256 + multipart upload with orch's TransferConfig +
   receipt) against raw boto3 ``upload_fileobj`` (boto3 defaults) of the same bytes to the same S3
   server (moto's server in its own process, on loopback), and against a local-disk write.
2. Step stall: what a training step waits for when a checkpoint of that size is saved asynchronously
   (snapshot to host memory) against the whole synchronous save (serialise, hash, write, commit).
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.harness import Section
from orchestrator.checkpoint.objects import FileObjectStore, S3ObjectStore
from orchestrator.checkpoint.session import RankCheckpointer
from orchestrator.checkpoint.store import CheckpointStore

COMMAND = "make bench  (bench/bench_checkpoint.py)"
SHARD_MB = 300
ROUNDS = 3


def _state_of_size(megabytes: int) -> dict:
    """A rank state shaped like the trainer's: module weights plus Adam moments (fp32)."""
    per = megabytes * 1024 * 1024 // 4 // 3
    gen = torch.Generator().manual_seed(0)
    return {"module": {"w": torch.randn(per, generator=gen)},
            "optimizer": {"exp_avg": torch.randn(per, generator=gen), "exp_avg_sq": torch.rand(per, generator=gen)},
            "progress": {"step": 1}}


def _start_moto() -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def _mbps(seconds: list[float], size: int) -> float:
    return size / 1e6 / statistics.median(seconds)


def run() -> Section:
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    payload = os.urandom(SHARD_MB * 1024 * 1024)
    moto, endpoint = _start_moto()
    try:
        orch_s3 = S3ObjectStore("bench", "orch", endpoint)
        orch_s3.ensure_bucket()
        raw = orch_s3.client
        orch_times, raw_times, disk_times = [], [], []
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DISK_DIR")) as tmp:
            disk = CheckpointStore(FileObjectStore(Path(tmp) / "disk"), "bench")
            s3_store = CheckpointStore(orch_s3, "bench")
            for i in range(ROUNDS):  # interleaved
                start = time.perf_counter()
                s3_store.put_shard(i, 0, payload)
                orch_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                raw.upload_fileobj(io.BytesIO(payload), "bench", f"raw/{i}.bin")
                raw_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                disk.put_shard(i, 0, payload)
                disk_times.append(time.perf_counter() - start)
            stall, sync = _stall_vs_sync(Path(tmp))
    finally:
        moto.kill()
    size = len(payload)
    orch_rate, raw_rate, disk_rate = _mbps(orch_times, size), _mbps(raw_times, size), _mbps(disk_times, size)
    ratio = orch_rate / raw_rate
    stall_ratio = stall / sync
    return Section("Checkpoints: upload throughput and step stall", COMMAND, [
        f"A {SHARD_MB} MB rank shard (random bytes, so nothing compresses), {ROUNDS} interleaved rounds, medians. "
        "S3 is moto's server in its own process on loopback (a Python server: its speed bounds both S3 rows).",
        "",
        "| path | MB/s |",
        "|---|---|",
        f"| orch shard upload to S3 (sha256 + 16 MB parts x 8 threads + receipt) | {orch_rate:.0f} |",
        f"| raw boto3 upload_fileobj, default TransferConfig, same bytes, same server | {raw_rate:.0f} |",
        f"| orch shard write to local disk (sha256 + fsync + rename) | {disk_rate:.0f} |",
        "",
        f"orch / raw boto3: **{ratio:.2f}x** (target >= 0.9x: {'met' if ratio >= 0.9 else 'NOT met'}).",
        "",
        f"Step stall of an asynchronous save of a {SHARD_MB} MB rank state (snapshot to host memory): "
        f"{stall:.3f} s; the same save done synchronously (serialise, sha256, write, receipt, manifest commit, "
        f"local disk): {sync:.3f} s; stall / synchronous = **{stall_ratio:.1%}** "
        f"(target <= 10%: {'met' if stall_ratio <= 0.10 else 'NOT met'}).",
    ])


def _stall_vs_sync(tmp: Path) -> tuple[float, float]:
    state = _state_of_size(SHARD_MB)
    stalls, syncs = [], []
    for i in range(ROUNDS):
        store = CheckpointStore(FileObjectStore(tmp / f"stall{i}"), "bench")
        ckpt = RankCheckpointer(store, 0, 1, {"world_size": 1}, keep_last=2)
        stalls.append(ckpt.save_async(10, state, 0.0, {}))
        ckpt.wait()
        start = time.perf_counter()
        ckpt.save_sync(20, state, 0.0, {})
        syncs.append(time.perf_counter() - start)
    return statistics.median(stalls), statistics.median(syncs)
