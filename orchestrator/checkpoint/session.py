"""One rank's checkpointing during training: asynchronous saves, emergency saves, and resume.

A save hands the rank's state to a background thread, which copies it into host memory, encodes
it (``codec``: tensors plus JSON, nothing pickled), uploads it under this attempt's keys and, on
rank 0, commits the step once every rank's receipt of this attempt is in, then applies retention
and collects garbage. The training step does not wait for the copy: a pre-step hook on the
optimizer (``guard``) holds the next parameter update until the copy is done, so the copy overlaps
the next step's forward and backward passes, which do not change the state. Without a guard the
copy is made before ``save_async`` returns.

Nothing is gathered to rank 0: each rank writes and reads only its own shard. Resume picks the
newest committed step whose shards every rank can read and verify; a corrupt or missing shard is
named, the step is rejected (uncommitted) and the previous committed step is tried. A storage
outage or a refused format stops the resume on every rank alike (a collective verdict).

With the in-memory tier, a save first keeps the rank's encoded shard in two nodes' memory; rank 0
then commits the step in memory as soon as every rank's copies are held (seconds, where the upload
takes minutes at scale), and resume tries that step first: it is taken only when every rank finds
its copy, byte for byte, else the newest durable commit is (``checkpoint/memory.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import torch

from orchestrator.checkpoint.codec import CheckpointFormatError, decode, encode_parts
from orchestrator.checkpoint.memory import MEMORY, OBJECT_STORE, ShardCopies
from orchestrator.checkpoint.objects import StorageError
from orchestrator.checkpoint.store import (
    GC_MARGIN_S,
    CheckpointError,
    CheckpointStore,
    CommitFailed,
    Manifest,
    sha256_of,
)

log = logging.getLogger(__name__)

ReduceMax = Callable[[list[float]], list[float]]  # element-wise MAX over every rank
OK, DAMAGED, UNREADABLE, REFUSED = 0, 1, 2, 3  # a rank's verdict on a checkpoint, worst wins
MEMORY_COMMIT_WAIT_S = 30.0  # rank 0 waits this long for every rank's copies, then leaves it to the upload


def to_host(obj):
    """A deep copy with every tensor cloned to CPU memory, detached from training."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_host(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_host(v) for v in obj)
    return obj


class RankCheckpointer:
    def __init__(
        self,
        store: CheckpointStore,
        rank: int,
        world_size: int,
        mesh: dict,
        keep_last: int = 3,
        keep_every: int = 0,
        commit_timeout_s: float = 300.0,
        attempt: int = 0,
        gc_margin_s: float = GC_MARGIN_S,
        copies: ShardCopies | None = None,
    ):
        """``copies``: the optional in-memory tier (``checkpoint/memory.py``): each uploaded shard is
        also kept there, and resume reads it from there first."""
        self.store, self.rank, self.world_size, self.mesh = store, rank, world_size, mesh
        self.copies = copies
        self.restored_from: str | None = None  # MEMORY or OBJECT_STORE, once resumed
        self.keep_last, self.keep_every = keep_last, keep_every
        self.commit_timeout_s, self.attempt, self.gc_margin_s = commit_timeout_s, attempt, gc_margin_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._copied = threading.Event()
        self._copied.set()
        self.guarded = False
        self.in_flight: int | None = None
        self.last_started: int | None = None  # the step of the newest save begun: the same on every rank
        self.last_committed: int | None = None  # durable: in object storage
        self.last_in_memory: int | None = None  # rank 0: committed in peer memory, upload not yet committed
        self.last_duration_s: float | None = None
        self.last_stall_s: float | None = None  # of the latest save: save_async plus guard waits
        self.stalled_s = 0.0  # stall not yet reported (``take_stall``)
        self.last_bytes = 0
        self.skipped: list[str] = []

    @property
    def restorable(self) -> int | None:
        """The newest step a restart can resume from: committed durably or, newer, in peer memory."""
        steps = [s for s in (self.last_committed, self.last_in_memory) if s is not None]
        return max(steps) if steps else None

    # ------------------------------------------------------------------ saving

    def guard(self, optimizer) -> bool:
        """Hold every step of ``optimizer`` (the innermost torch optimizer found through
        ``.optimizer`` attributes, e.g. under DeepSpeed's ZeRO wrapper) until a save's copy is done.
        Returns False (and saves copy before returning) when there is no torch optimizer to hook."""
        inner = optimizer
        while not isinstance(inner, torch.optim.Optimizer) and hasattr(inner, "optimizer"):
            inner = inner.optimizer
        if not isinstance(inner, torch.optim.Optimizer):
            return False
        inner.register_step_pre_hook(lambda *_: self.hold_until_copied())
        self.guarded = True
        return True

    def hold_until_copied(self) -> None:
        if not self._copied.is_set():
            started = time.perf_counter()
            self._copied.wait()
            waited = time.perf_counter() - started
            self.stalled_s += waited
            self.last_stall_s = (self.last_stall_s or 0.0) + waited

    def save_async(self, step: int, state: dict, tokens: float, progress: dict, deadline: float | None = None) -> float:
        """Start saving ``state`` as ``step``; returns the seconds the caller was held (the previous
        save still in flight, and the copy when there is no guard)."""
        started = time.perf_counter()
        self.wait()
        self._copied = threading.Event()
        if not self.guarded:
            state = to_host(state)
            self._copied.set()
        self.in_flight = self.last_started = step
        self._thread = threading.Thread(
            target=self._write,
            name=f"checkpoint-{step}",
            daemon=True,
            args=(step, state, tokens, progress, deadline, time.perf_counter()),
        )
        self._thread.start()
        held = time.perf_counter() - started
        self.stalled_s += held
        self.last_stall_s = held
        return held

    def take_stall(self) -> float:
        """The stall since the last call (what the step just taken waited for)."""
        stalled, self.stalled_s = self.stalled_s, 0.0
        return stalled

    def _write(
        self, step: int, state: dict, tokens: float, progress: dict, deadline: float | None, started: float
    ) -> None:
        try:
            try:
                snapshot = state if self._copied.is_set() else to_host(state)
            finally:
                self._copied.set()
            payload = encode_parts(snapshot)
            self.last_bytes = payload.size
            self._keep_copy(step, payload)  # first: a rank whose receipt is in has its copy kept too
            in_memory = None
            if self.rank == 0 and deadline is None and self.copies is not None:
                # beside the upload, not before it (an emergency save commits durably or not at all)
                in_memory = threading.Thread(
                    target=self._commit_in_memory, args=(step, tokens, progress), name=f"memory-commit-{step}"
                )
                in_memory.start()
            try:
                self.store.put_shard(step, self.rank, payload, self.attempt)
            finally:
                if in_memory is not None:
                    in_memory.join()
            if self.rank == 0:
                self.store.commit(
                    step,
                    self.world_size,
                    self.mesh,
                    tokens,
                    progress,
                    self.commit_timeout_s,
                    attempt=self.attempt,
                    deadline=deadline,
                )
                self.last_committed = step
                self._tidy()
            self.last_duration_s = time.perf_counter() - started
        except CommitFailed as exc:
            if deadline is None:
                self._error = exc
            else:  # an emergency save that missed its deadline: abandoned, the previous checkpoint stands
                log.warning("rank 0: emergency checkpoint at step %s abandoned: %s", step, exc)
        except BaseException as exc:  # reported to the training thread by wait()
            self._error = exc
        finally:
            self.in_flight = None

    def _keep_copy(self, step: int, payload) -> None:
        """A copy into peer memory, used on resume only if this step commits (best effort: never fails
        the save; the durable upload follows)."""
        if self.copies is not None:  # (the tier's own failures are its to log: it never raises)
            self.copies.keep(step, self.rank, self.attempt, payload.tobytes(), payload.sha256())

    def _commit_in_memory(self, step: int, tokens: float, progress: dict) -> None:
        """Rank 0: once every rank's copy of ``step`` is held where it outlives any one node, record
        the step as restorable from memory (best effort: a miss leaves the durable commit to come)."""
        try:
            give_up = time.time() + min(MEMORY_COMMIT_WAIT_S, self.commit_timeout_s)
            while True:
                kept = self.copies.kept(step, self.attempt)
                if len(kept) >= self.world_size:
                    break
                if time.time() > give_up:
                    missing = sorted(set(range(self.world_size)) - set(kept))
                    log.info("step %s: not committed in memory (ranks %s have no copy on two nodes)", step, missing[:8])
                    return
                time.sleep(0.1)
            if max(self.store.attempts(), default=self.attempt) != self.attempt:
                return  # a newer attempt registered: this one is a zombie; its step must not become restorable
            self.store.commit_in_memory(step, self.mesh, tokens, progress, kept, self.attempt)
        except Exception as exc:  # noqa: BLE001 - best effort: the durable commit does not depend on it
            log.warning("step %s: not committed in memory: %s", step, exc)
            return
        self.last_in_memory = step

    def _tidy(self) -> None:
        """Retention and garbage collection after a commit: best effort (a failure leaves garbage
        that the next commit's pass removes; it never fails the save that just committed)."""
        try:
            self.store.apply_retention(self.keep_last, self.keep_every)
            self.store.collect_garbage(self.attempt, self.gc_margin_s)
            newest = self.last_committed
            if newest is not None:  # a memory commit at or below the newest durable one is never used
                self.store.drop_in_memory(lambda step: step > newest)
        except StorageError as exc:
            log.warning("step %s committed; retention or garbage collection failed: %s", self.last_committed, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the save in flight; False if it is still running after ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, CheckpointError):
                raise error
            if isinstance(error, StorageError):
                raise error
            raise CheckpointError(f"rank {self.rank}: checkpoint failed: {error}") from error
        return True

    def save_fits(self, deadline: float, agree: Callable[[list[float]], list[float]] | None = None) -> bool:
        """Whether a save started now is expected to commit by ``deadline``: the latest, over the gang,
        of now + the rank's last measured save (``agree``: a max all-reduce across the ranks, so every
        rank decides the same and none starts a save the others skip). True before any measurement.
        A preempted job asked to save first does so only when this holds; otherwise it stops at once:
        a save that cannot commit would only hold the nodes until the deadline and then be abandoned."""
        mine = time.time() + (self.last_duration_s or 0.0)
        latest = agree([mine])[0] if agree is not None else mine
        return latest <= deadline

    def save_sync(self, step: int, state: dict, tokens: float, progress: dict, deadline: float | None = None) -> bool:
        """Save and wait until the step is committed. With ``deadline`` (epoch seconds; an
        interruption notice) the save is abandoned if it cannot commit in time: False, nothing is
        committed, the previous checkpoint stands, and the objects it left are garbage of this
        attempt for the next attempt's collection."""
        if deadline is None:
            self.save_async(step, state, tokens, progress)
            self.wait()
            return True
        try:
            if not self.wait(_remaining(deadline)):
                log.warning("rank %s: the save in flight did not finish before the deadline", self.rank)
                return False
            self.save_async(step, state, tokens, progress, deadline)
            if not self.wait(_remaining(deadline)):
                return False
        except (CheckpointError, StorageError) as exc:
            log.warning("rank %s: emergency checkpoint at step %s abandoned: %s", self.rank, step, exc)
            return False
        return self.rank == 0 or self._committed_by(step, deadline)

    def _committed_by(self, step: int, deadline: float) -> bool:
        while True:
            if step in self.store.committed() and self.store.manifest(step).attempt == self.attempt:
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.05)

    # ------------------------------------------------------------------ resuming

    def load_latest(self, reduce_max: ReduceMax) -> tuple[Manifest, dict] | None:
        """The newest step every rank can restore, and this rank's state: the step committed in memory
        after the newest durable commit, when every rank finds its copy; otherwise the newest committed
        step for this mesh that every rank can verify. Collective: every rank walks the same steps and
        agrees on each. Rank 0 then removes memory manifests above the step chosen (unrestorable)."""
        found = self._load_in_memory(reduce_max)
        if found is None:
            found = self._load_committed(reduce_max)
        if self.rank == 0:
            floor = found[0].step if found is not None else -1
            try:
                self.store.drop_in_memory(lambda step: step <= floor)
            except StorageError as exc:
                log.warning("memory manifests above step %s could not be removed: %s", floor, exc)
        return found

    def _load_in_memory(self, reduce_max: ReduceMax) -> tuple[Manifest, dict] | None:
        """Rank 0 names the newest memory commit above the newest durable one (one all-reduce, so a
        manifest written meanwhile cannot split the ranks); every rank then fetches its copy."""
        candidate = -1.0
        if self.rank == 0 and self.copies is not None:
            try:
                durable = self.store.committed()
                newer = [step for step in self.store.in_memory() if not durable or step > durable[-1]]
                candidate = float(newer[-1]) if newer else -1.0
            except StorageError as exc:  # (the durable walk that follows meets the outage on every rank)
                log.warning("memory manifests could not be listed: %s", exc)
        step = int(reduce_max([candidate])[0])
        if step < 0:
            return None
        verdict, manifest, state, problem = self._read_in_memory(step)
        if int(reduce_max([float(verdict)])[0]) != OK:
            if problem:
                log.info("rank %s: %s; resuming from object storage", self.rank, problem)
            return None
        self.restored_from = MEMORY
        return manifest, state

    def _read_in_memory(self, step: int) -> tuple[int, Manifest | None, dict | None, str]:
        try:
            manifest = self.store.memory_manifest(step)
        except (CheckpointError, StorageError) as exc:
            return DAMAGED, None, None, f"step {step} in memory: {exc}"
        if not _mesh_matches(manifest.mesh, self.mesh):
            return DAMAGED, None, None, f"step {step} in memory was saved for mesh {manifest.mesh}"
        payload = self._from_memory(manifest)
        if payload is None:
            return DAMAGED, None, None, f"step {step}: no live peer holds rank {self.rank}'s copy"
        try:
            return OK, manifest, decode(payload, f"step {step} rank {self.rank} (memory)"), ""
        except CheckpointFormatError as exc:
            return DAMAGED, None, None, str(exc)

    def _load_committed(self, reduce_max: ReduceMax) -> tuple[Manifest, dict] | None:
        for step in reversed(self.store.committed()):
            manifest = self.store.manifest(step)
            if not _mesh_matches(manifest.mesh, self.mesh):
                log.warning("step %s was saved for mesh %s, not %s; skipped", step, manifest.mesh, self.mesh)
                continue
            verdict, state, problem = self._read(manifest)
            worst = int(reduce_max([float(verdict)])[0])
            if worst == OK:
                return manifest, state
            if worst == DAMAGED:
                self.skipped.append(problem or f"step {step}: another rank found a damaged shard")
                if self.rank == 0:
                    self.store.reject(step, problem or "a damaged shard on another rank (named in its log)")
                continue
            if worst == REFUSED:
                raise CheckpointFormatError(problem or f"step {step}: another rank refused its shard's format")
            raise StorageError(problem or f"step {step}: another rank could not read its shard")
        return None

    def _read(self, manifest: Manifest) -> tuple[int, dict | None, str]:
        if not manifest.loadable:
            return (
                REFUSED,
                None,
                (
                    f"step {manifest.step} was written in orch checkpoint format "
                    f"{manifest.format_version} (pickled shards), which orch no longer loads "
                    "because unpickling runs code from the bucket; see docs/checkpoints.md"
                ),
            )
        try:
            payload = self._from_memory(manifest)
            self.restored_from = MEMORY
            if payload is None:
                payload = self.store.read_shard(manifest, self.rank)
                self.restored_from = OBJECT_STORE
        except CheckpointError as exc:
            log.warning("rank %s: %s; falling back to the previous checkpoint", self.rank, exc)
            return DAMAGED, None, str(exc)
        except StorageError as exc:
            return UNREADABLE, None, f"step {manifest.step}: {exc}"
        try:
            return OK, decode(payload, f"step {manifest.step} rank {self.rank}"), ""
        except CheckpointFormatError as exc:
            return REFUSED, None, str(exc)

    def _from_memory(self, manifest: Manifest) -> bytes | None:
        """This rank's shard from peer memory when a holder has exactly the committed bytes."""
        record = manifest.files[self.rank] if self.rank < len(manifest.files) else None
        if self.copies is None or record is None:
            return None
        payload = self.copies.fetch(manifest.step, self.rank, record.sha256)
        if payload is None or len(payload) != record.size or sha256_of(payload) != record.sha256:
            return None
        return payload


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.time())


def _mesh_matches(saved: dict, current: dict) -> bool:
    return all(saved.get(k) == current.get(k) for k in ("pipeline", "data", "expert", "tensor", "world_size"))
