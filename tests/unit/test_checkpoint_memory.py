"""The in-memory checkpoint tier (``checkpoint/memory.py``) as the rank checkpointers use it: each
uploaded shard is also kept in memory, resume reads memory first, and only a copy that is exactly the
committed shard (size and sha256 of the manifest) is used; otherwise object storage. The Ray holders
that implement the tier across nodes are exercised by tests/integration/test_control_plane.py."""

from __future__ import annotations

from orchestrator.checkpoint.memory import MEMORY, OBJECT_STORE, ShardCopies
from orchestrator.checkpoint.objects import FileObjectStore
from orchestrator.checkpoint.session import RankCheckpointer
from orchestrator.checkpoint.store import CheckpointStore, shard_key
from tests.unit.test_checkpoint_session import MESH, ThreadGang, on_every_rank, state


class DictCopies:
    """A holder in this process's memory: {(step, rank): (sha256, bytes)}."""

    def __init__(self):
        self.held: dict[tuple[int, int], tuple[str, bytes]] = {}

    def keep(self, step: int, rank: int, attempt: int, payload: bytes, sha256: str) -> None:
        self.held[(step, rank)] = (sha256, payload)

    def fetch(self, step: int, rank: int, sha256: str) -> bytes | None:
        held = self.held.get((step, rank))
        return held[1] if held and held[0] == sha256 else None


def saved_gang(tmp_path, copies: DictCopies) -> tuple[FileObjectStore, CheckpointStore]:
    objects = FileObjectStore(tmp_path / "ckpt")
    store = CheckpointStore(objects, "job")
    attempt = store.register_attempt()
    ranks = [RankCheckpointer(store, r, 2, MESH, keep_last=2, attempt=attempt, copies=copies) for r in range(2)]
    for rank, ckpt in enumerate(ranks):
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
    sha, _ = copies.held[(10, 1)]
    copies.held[(10, 1)] = (sha, b"stale or damaged bytes under the right name")
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
