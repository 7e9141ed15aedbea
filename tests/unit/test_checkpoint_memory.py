"""The in-memory checkpoint tier (``checkpoint/memory.py``) as the rank checkpointers use it: each
uploaded shard is also kept in memory, resume reads memory first, and only a copy that is exactly the
committed shard (size and sha256 of the manifest) is used; otherwise object storage. A step whose
copies are all held is committed in memory before its upload ends, and a restart resumes from it
when every rank finds its copy. The Ray holders that implement the tier across nodes are exercised by
tests/integration/test_control_plane.py and bench/bench_recovery.py."""

from __future__ import annotations

import pytest

from orchestrator.checkpoint.memory import MEMORY, OBJECT_STORE, ShardCopies
from orchestrator.checkpoint.objects import FileObjectStore, StorageError
from orchestrator.checkpoint.session import RankCheckpointer
from orchestrator.checkpoint.store import CheckpointError, CheckpointStore, shard_key
from tests.unit.test_checkpoint_session import MESH, ThreadGang, on_every_rank, state


class DictCopies:
    """A holder in this process's memory: {(step, rank): (sha256, bytes, attempt)}; what it holds
    counts as held on both the rank's node and its buddy's (``kept``)."""

    def __init__(self):
        self.held: dict[tuple[int, int], tuple] = {}

    def keep(self, step: int, rank: int, attempt: int, payload: bytes, sha256: str) -> None:
        self.held[(step, rank)] = (sha256, payload, attempt)

    def fetch(self, step: int, rank: int, sha256: str) -> bytes | None:
        held = self.held.get((step, rank))
        return held[1] if held and held[0] == sha256 else None

    def kept(self, step: int, attempt: int) -> dict[int, tuple[str, int]]:
        return {r: (h[0], len(h[1])) for (s, r), h in self.held.items() if s == step and h[2] == attempt}


class UploadsStopAt(FileObjectStore):
    """Object storage whose shard uploads of one step never arrive (the gang is lost mid-upload)."""

    def __init__(self, root, step: int):
        super().__init__(root)
        self.blocked = f"step_{step:08d}/"

    def put(self, key, body):
        if key.startswith(self.blocked):
            raise StorageError(f"{key}: the node went during the upload")
        return super().put(key, body)


def saved_gang(tmp_path, copies: DictCopies) -> tuple[FileObjectStore, CheckpointStore]:
    objects = FileObjectStore(tmp_path / "ckpt")
    store = CheckpointStore(objects, "job")
    attempt = store.register_attempt()
    ranks = [RankCheckpointer(store, r, 2, MESH, keep_last=2, attempt=attempt, copies=copies) for r in range(2)]
    for rank, ckpt in enumerate(ranks):  # (rank 1 is usually still encoding when rank 0 looks: it waits)
        ckpt.save_async(10, state(rank, 10.0), 0.0, {})
    for ckpt in ranks:
        ckpt.wait()
    return objects, store


def resume(store: CheckpointStore, copies: DictCopies) -> tuple[list, list[RankCheckpointer]]:
    attempt = store.register_attempt()
    ranks = [RankCheckpointer(store, r, 2, MESH, attempt=attempt, copies=copies) for r in range(2)]
    reduce = ThreadGang(2)
    return on_every_rank(lambda r: ranks[r].load_latest(reduce.reducer(r))), ranks


def test_every_saved_shard_is_kept_in_memory_and_resume_needs_no_object_storage(tmp_path):
    copies = DictCopies()
    assert isinstance(copies, ShardCopies)
    objects, store = saved_gang(tmp_path, copies)
    assert sorted(copies.held) == [(10, 0), (10, 1)]
    for rank in range(2):  # the bucket loses the shards: only memory can restore them now
        objects.delete([shard_key(10, rank, 1)])
    loaded, ranks = resume(store, copies)
    assert [float(s["w"][0]) for _, s in loaded] == [10.0, 10.0]
    assert [r.restored_from for r in ranks] == [MEMORY, MEMORY]


def test_a_copy_that_is_not_the_committed_shard_is_never_restored(tmp_path):
    copies = DictCopies()
    _, store = saved_gang(tmp_path, copies)
    sha, _, attempt = copies.held[(10, 1)]
    copies.held[(10, 1)] = (sha, b"stale or damaged bytes under the right name", attempt)
    loaded, ranks = resume(store, copies)
    assert [float(s["w"][0]) for _, s in loaded] == [10.0, 10.0]
    assert [r.restored_from for r in ranks] == [MEMORY, OBJECT_STORE]


def test_a_lost_holder_falls_back_to_object_storage(tmp_path):
    copies = DictCopies()
    _, store = saved_gang(tmp_path, copies)
    del copies.held[(10, 0)]  # the peer that held rank 0's copy died with the node it covered
    loaded, ranks = resume(store, copies)
    assert [float(s["w"][0]) for _, s in loaded] == [10.0, 10.0]
    assert [r.restored_from for r in ranks] == [OBJECT_STORE, MEMORY]


def saved_then_lost_mid_upload(tmp_path, copies: DictCopies) -> CheckpointStore:
    """Step 10 committed to object storage; step 20 kept in memory, its upload lost with the gang."""
    store = CheckpointStore(UploadsStopAt(tmp_path / "ckpt", 20), "job")
    attempt = store.register_attempt()
    ranks = [RankCheckpointer(store, r, 2, MESH, keep_last=2, attempt=attempt, copies=copies) for r in range(2)]
    for step in (10, 20):
        for rank, ckpt in enumerate(ranks):
            ckpt.save_async(step, state(rank, float(step)), float(step), {"step": step})
        for ckpt in ranks:
            if step == 20:
                with pytest.raises(StorageError):
                    ckpt.wait()
            else:
                ckpt.wait()
    assert store.committed() == [10] and store.in_memory() == [20]
    assert ranks[0].restorable == 20 and ranks[0].last_committed == 10
    return store


def test_a_step_committed_in_memory_is_resumed_from_though_its_upload_never_committed(tmp_path):
    copies = DictCopies()
    store = saved_then_lost_mid_upload(tmp_path, copies)
    loaded, ranks = resume(store, copies)
    assert [m.step for m, _ in loaded] == [20, 20] and not loaded[0][0].durable
    assert [float(s["w"][0]) for _, s in loaded] == [20.0, 20.0]
    assert loaded[0][0].tokens == 20.0 and loaded[0][0].progress == {"step": 20}
    assert [r.restored_from for r in ranks] == [MEMORY, MEMORY]
    assert store.in_memory() == [20]  # still the newest restorable step


def test_a_step_in_memory_that_one_rank_cannot_find_falls_back_to_the_durable_one_and_is_dropped(tmp_path):
    copies = DictCopies()
    store = saved_then_lost_mid_upload(tmp_path, copies)
    del copies.held[(20, 1)]  # rank 1's node and its buddy are both gone
    loaded, ranks = resume(store, copies)
    assert [m.step for m, _ in loaded] == [10, 10] and loaded[0][0].durable
    assert [float(s["w"][0]) for _, s in loaded] == [10.0, 10.0]
    assert store.in_memory() == []  # proved unrestorable: a later restart does not try it again


def test_a_memory_commit_is_removed_once_its_step_is_committed_durably(tmp_path):
    copies = DictCopies()
    _, store = saved_gang(tmp_path, copies)
    assert store.committed() == [10] and store.in_memory() == []
    assert store.objects.list("memory/") == []


def test_a_rank_without_its_copies_held_leaves_the_step_to_the_upload(tmp_path):
    copies = DictCopies()
    store = CheckpointStore(FileObjectStore(tmp_path / "ckpt"), "job")
    attempt = store.register_attempt()
    ranks = [
        RankCheckpointer(store, r, 2, MESH, attempt=attempt, copies=copies, commit_timeout_s=0.3) for r in range(2)
    ]
    ranks[0].save_async(20, state(0, 20.0), 20.0, {})  # rank 1 never saves (it crashed)
    with pytest.raises(CheckpointError):
        ranks[0].wait()
    assert store.in_memory() == [] and store.committed() == [] and ranks[0].restorable is None
