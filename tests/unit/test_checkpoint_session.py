"""Rank checkpointers of one gang (threads here, each with its own checkpointer on one store):
a crash mid-save, a restart, and what the restarted attempt commits and loads; a damaged shard
found at resume; format-1 checkpoints refused; an emergency save abandoned at its deadline."""

from __future__ import annotations

import json
import threading
import time

import torch

from orchestrator.checkpoint.codec import CheckpointFormatError
from orchestrator.checkpoint.objects import FileObjectStore
from orchestrator.checkpoint.session import RankCheckpointer
from orchestrator.checkpoint.store import CheckpointStore, shard_key

MESH = {"pipeline": 1, "data": 2, "expert": 1, "tensor": 1, "world_size": 2}


class ThreadGang:
    """An element-wise MAX all-reduce across ``n`` threads (a stand-in for torch.distributed)."""

    def __init__(self, n: int):
        self.barrier, self.values, self.n = threading.Barrier(n), {}, n

    def reducer(self, rank: int):
        def reduce_max(values: list[float]) -> list[float]:
            self.values[rank] = values
            self.barrier.wait()
            result = [max(v[i] for v in self.values.values()) for i in range(len(values))]
            self.barrier.wait()
            return result

        return reduce_max


def state(rank: int, value: float) -> dict:
    return {"rank": rank, "w": torch.full((64,), value), "progress": {"step": int(value)}}


def gang(store: CheckpointStore, attempt: int, **kwargs) -> list[RankCheckpointer]:
    return [
        RankCheckpointer(store, rank, 2, MESH, keep_last=1, attempt=attempt, gc_margin_s=0, **kwargs)
        for rank in range(2)
    ]


def on_every_rank(fn) -> list:
    results: list = [None, None]

    def run(rank):
        results[rank] = fn(rank)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_a_crash_mid_save_then_a_restart_commits_only_the_new_attempts_shards(tmp_path):
    store = CheckpointStore(FileObjectStore(tmp_path / "ckpt"), "job")
    first = gang(store, store.register_attempt())
    for rank, ckpt in enumerate(first):
        ckpt.save_async(10, state(rank, 10.0), 0.0, {})
    for ckpt in first:
        ckpt.wait()
    assert store.committed() == [10]
    first[1].save_async(20, state(1, 20.0), 0.0, {})  # rank 1 finished step 20 ...
    first[1].wait()  # ... and rank 0 crashed before writing its shard: attempt 1 is over

    second = gang(store, store.register_attempt(), commit_timeout_s=30)
    reduce = ThreadGang(2)
    loaded = on_every_rank(lambda r: second[r].load_latest(reduce.reducer(r)))
    assert [m.step for m, _ in loaded] == [10, 10]
    assert [float(s["w"][0]) for _, s in loaded] == [10.0, 10.0]
    second[0].save_async(20, state(0, 21.0), 0.0, {})
    time.sleep(1.0)  # rank 1 of attempt 2 is slow; attempt 1's receipt of rank 1 must not be counted
    assert store.committed() == [10]
    second[1].save_async(20, state(1, 21.0), 0.0, {})
    for ckpt in second:
        ckpt.wait()
    assert store.committed() == [20] and store.verify(20) == []  # keep_last 1: step 10 went after 20 committed
    manifest = store.manifest(20)
    assert manifest.attempt == 2 and all(f.attempt == 2 for f in manifest.files)
    third = gang(store, store.register_attempt())
    reduce = ThreadGang(2)
    loaded = on_every_rank(lambda r: third[r].load_latest(reduce.reducer(r)))
    assert [float(s["w"][0]) for _, s in loaded] == [21.0, 21.0]  # attempt 2's states, not attempt 1's


def test_a_damaged_shard_is_rejected_and_the_previous_checkpoint_is_used(tmp_path):
    objects = FileObjectStore(tmp_path / "ckpt")
    store = CheckpointStore(objects, "job")
    ranks = [RankCheckpointer(store, r, 2, MESH, keep_last=3, attempt=1) for r in range(2)]
    for step in (10, 20):
        for rank, ckpt in enumerate(ranks):
            ckpt.save_async(step, state(rank, float(step)), 0.0, {})
        for ckpt in ranks:
            ckpt.wait()
    objects.put(shard_key(20, 1, 1), b"flipped bits")
    reduce = ThreadGang(2)
    restarted = gang(store, store.register_attempt())
    loaded = on_every_rank(lambda r: restarted[r].load_latest(reduce.reducer(r)))
    assert [m.step for m, _ in loaded] == [10, 10]
    assert any("rank_00001.safetensors is corrupt" in p for p in restarted[1].skipped)
    assert store.committed() == [10]  # step 20 is uncommitted: retention can never keep it over a good one
    assert "damaged shard" in json.loads(objects.get("step_00000020/rejected.json"))["reason"]


def test_a_format_1_checkpoint_is_refused_with_a_clear_error(tmp_path):
    import io

    objects = FileObjectStore(tmp_path / "ckpt")
    store = CheckpointStore(objects, "job")
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    for rank in range(2):  # as orch wrote it before format 2: pickled .pt shards, no attempt
        objects.put(f"step_00000010/rank_{rank:05d}.pt", buffer.getvalue())
    files = [
        {
            "key": f"step_00000010/rank_{r:05d}.pt",
            "rank": r,
            "size": len(buffer.getvalue()),
            "sha256": __import__("hashlib").sha256(buffer.getvalue()).hexdigest(),
        }
        for r in range(2)
    ]
    objects.put(
        "step_00000010/manifest.json",
        json.dumps({"job": "job", "step": 10, "tokens": 0.0, "mesh": MESH, "files": files, "created_at": 0.0}).encode(),
    )
    assert store.verify(10) == []  # still listable and verifiable
    reduce = ThreadGang(2)
    ranks = gang(store, store.register_attempt())
    errors = on_every_rank(lambda r: _raises(lambda: ranks[r].load_latest(reduce.reducer(r))))
    assert all(isinstance(e, CheckpointFormatError) and "format 1 (pickled shards)" in str(e) for e in errors)


def _raises(fn):
    try:
        fn()
    except Exception as exc:  # returned for the assertion
        return exc
    return None


def test_an_emergency_save_that_cannot_commit_in_time_is_abandoned(tmp_path):
    store = CheckpointStore(FileObjectStore(tmp_path / "ckpt"), "job")
    ranks = gang(store, 1)
    on_every_rank(lambda r: ranks[r].save_sync(10, state(r, 10.0), 0.0, {}, deadline=time.time() + 30))
    assert store.committed() == [10]
    # rank 1 is too slow for the notice: rank 0's commit cannot have every receipt before the deadline
    deadline = time.time() + 1.0
    assert ranks[0].save_sync(20, state(0, 20.0), 0.0, {}, deadline=deadline) is False
    ranks[0].wait()  # nothing raised: abandoned cleanly
    assert time.time() < deadline + 2.0
    ranks[1].save_sync(20, state(1, 20.0), 0.0, {}, deadline=deadline)
    time.sleep(0.5)
    assert store.committed() == [10] and store.verify(10) == []  # the previous checkpoint stands


def test_a_gang_starts_a_save_with_a_deadline_only_if_every_rank_expects_it_to_commit_in_time(tmp_path):
    """A preempted job saves first only when the save fits before the deadline; the decision is the
    same on every rank (a max over the gang of now + the rank's last measured save), so no rank
    starts a save the others skip."""
    store = CheckpointStore(FileObjectStore(tmp_path / "ckpt"), "job")
    ranks = gang(store, 1)
    threads = ThreadGang(2)
    assert on_every_rank(lambda r: ranks[r].save_fits(time.time() + 1.0, threads.reducer(r))) == [True, True]
    on_every_rank(lambda r: ranks[r].save_sync(10, state(r, 10.0), 0.0, {}, deadline=time.time() + 30))
    assert all(r.last_duration_s is not None and r.last_duration_s < 2.0 for r in ranks)
    ranks[1].last_duration_s = 5.0  # rank 1's last save took 5 s (a slow rank, as measured)
    deadline = time.time() + 2.0
    assert ranks[0].save_fits(deadline)  # alone, rank 0 would start the save...
    assert on_every_rank(lambda r: ranks[r].save_fits(deadline, threads.reducer(r))) == [False, False]  # ...not so
    assert on_every_rank(lambda r: ranks[r].save_fits(time.time() + 30, threads.reducer(r))) == [True, True]
