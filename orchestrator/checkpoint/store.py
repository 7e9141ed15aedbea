"""Checkpoints on an object store: rank shards, receipts, and a manifest that commits them.

Layout under the job's prefix (orch checkpoint format 2)::

    attempts/a00003.json                          an attempt registered itself before it saved anything
    step_00000120/a00003/rank_00003.safetensors   one rank's state, written by attempt 3
    step_00000120/a00003/rank_00003.json          its receipt: attempt, step, size and sha256
    step_00000120/manifest.json                   the commit point: names the shards it commits
    memory/step_00000125.json                     committed in memory: every rank's shard is held in two
                                                  nodes' memory, its upload not yet committed

Why the attempt is in every key: at 2,048 ranks for weeks, a crashed attempt leaves shards and
receipts behind and its zombie writers may still be uploading while the next attempt saves the same
steps. A commit counts only receipts of its own attempt that match the step (a restarted attempt
never commits old shards), and garbage collection can tell objects of attempts that are over from
objects still being written (``is_garbage``).

A checkpoint without its manifest does not exist for readers; ``latest`` and ``committed`` look at
manifests only, never at shard listings. Retention deletes a manifest before its shards, so a
reader never sees a manifest whose shards are gone. Manifests of format 1 (pickled ``.pt`` shards,
no attempt) are read so they can be listed, verified and removed, but not loaded (see ``codec``).

A memory manifest (``commit_in_memory``) has the same fields, with shard records that name no key:
the bytes are only in peer memory (``checkpoint/memory.py``). It is outside ``step_*/`` so garbage
collection never sees it; rank 0 removes those at or below the newest durable commit after each
commit, and those above the step an attempt resumed from when it resumes (they proved unrestorable).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from orchestrator.checkpoint.codec import SHARD_SUFFIX, Encoded
from orchestrator.checkpoint.objects import ObjectInfo, ObjectNotFound, ObjectStore, StorageError
from orchestrator.errors import OrchError

MANIFEST = "manifest.json"
STEP_KEY = re.compile(r"^step_(\d{8})/(?:a(\d{5})/)?")
ATTEMPT_KEY = re.compile(r"^attempts/a(\d{5})\.json$")
MEMORY_PREFIX = "memory/"
MEMORY_KEY = re.compile(r"^memory/step_(\d{8})\.json$")
IN_MEMORY = "(peer memory)"  # the key of a shard record in a memory manifest: no object holds it
FORMAT_VERSION = 2
GC_MARGIN_S = 600.0  # an object younger than this is never garbage: a slow writer may still be on it


class CheckpointError(OrchError):
    """A checkpoint could not be written, committed or read."""


class CommitFailed(CheckpointError):
    """Rank 0 could not commit a step (receipts missing by the deadline, or the deadline passed)."""


def step_prefix(step: int) -> str:
    return f"step_{step:08d}/"


def attempt_prefix(step: int, attempt: int) -> str:
    return f"{step_prefix(step)}a{attempt:05d}/"


def shard_key(step: int, rank: int, attempt: int = 0) -> str:
    return f"{attempt_prefix(step, attempt)}rank_{rank:05d}{SHARD_SUFFIX}"


def receipt_key(step: int, rank: int, attempt: int = 0) -> str:
    return f"{attempt_prefix(step, attempt)}rank_{rank:05d}.json"


@dataclass
class ShardRecord:
    key: str
    rank: int
    size: int
    sha256: str
    attempt: int = 0
    step: int = -1


@dataclass
class Manifest:
    job: str
    step: int
    tokens: float
    mesh: dict  # pipeline, data, expert, tensor, world_size
    files: list[ShardRecord]
    created_at: float
    progress: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    attempt: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = _upgrade(json.loads(text))
        data["files"] = [ShardRecord(**f) for f in data["files"]]
        return cls(**data)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def durable(self) -> bool:
        """False for a memory manifest: its shards are only in peer memory."""
        return not any(f.key == IN_MEMORY for f in self.files)

    @property
    def loadable(self) -> bool:
        """Format 1 shards are pickles: listed and verified, never loaded."""
        return self.format_version >= 2


def _upgrade(data: dict) -> dict:
    """Read older manifests: format 1 had no progress and no attempt (its shards are pickles)."""
    data.setdefault("format_version", 1)
    data.setdefault("progress", {})
    data.setdefault("attempt", 0)
    return data


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_step_attempt(key: str) -> tuple[int, int | None] | None:
    """(step, attempt) of a key under ``step_*/`` (attempt None for a manifest or a format-1 key)."""
    match = STEP_KEY.match(key)
    if not match:
        return None
    return int(match.group(1)), (int(match.group(2)) if match.group(2) else None)


class CheckpointStore:
    """One job's checkpoints on an object store."""

    def __init__(self, objects: ObjectStore, job: str):
        self.objects, self.job = objects, job

    # ------------------------------------------------------------------ attempts

    def register_attempt(self, label: str = "") -> int:
        """A new attempt number, above every attempt that ever registered here (called by rank 0
        before anything is saved; the number is then shared with the other ranks)."""
        attempt = max(self.attempts(), default=0) + 1
        self.objects.put(
            f"attempts/a{attempt:05d}.json",
            json.dumps({"attempt": attempt, "started_at": time.time(), "label": label}).encode(),
        )
        return attempt

    def attempts(self) -> list[int]:
        found = (ATTEMPT_KEY.match(o.key) for o in self.objects.list("attempts/"))
        return sorted(int(m.group(1)) for m in found if m)

    def attempt_starts(self) -> list[float]:
        """When each registered attempt started (seconds since the epoch), oldest first; an
        unreadable registration is skipped (it says nothing about when)."""
        starts = []
        for attempt in self.attempts():
            try:
                starts.append(float(json.loads(self.objects.get(f"attempts/a{attempt:05d}.json"))["started_at"]))
            except (KeyError, TypeError, ValueError):
                continue
        return sorted(starts)

    def exposure_since_first_attempt(self, now: float | None = None) -> tuple[int, float] | None:
        """What a job without a state store (a RayJob on Kubernetes, retried by KubeRay) can tell the
        ``auto`` interval about its interruptions: each earlier attempt ended in a failure (a RayJob is
        retried only then), over the wall time since the first attempt started. The wall time counts
        the gaps between attempts too, so the MTBF this gives errs long, never short. None before the
        first attempt."""
        starts = self.attempt_starts()
        if not starts:
            return None
        now = time.time() if now is None else now
        return len(starts), max(0.0, now - starts[0])

    # ------------------------------------------------------------------ writing

    def put_shard(self, step: int, rank: int, payload: bytes | Encoded, attempt: int = 0) -> ShardRecord:
        """Upload one rank's shard, then its receipt (the receipt says the shard is whole)."""
        if isinstance(payload, Encoded):  # uploaded from the tensors' memory, without one big copy
            size, digest, body = payload.size, payload.sha256(), payload.reader()
        else:
            size, digest, body = len(payload), sha256_of(payload), payload
        record = ShardRecord(shard_key(step, rank, attempt), rank, size, digest, attempt, step)
        self.objects.put(record.key, body)
        self.objects.put(receipt_key(step, rank, attempt), json.dumps(asdict(record)).encode())
        return record

    def receipts(
        self, step: int, attempt: int = 0, known: dict[int, ShardRecord] | None = None
    ) -> dict[int, ShardRecord]:
        """Receipts of ``attempt`` for ``step``; one naming another attempt, step or key is ignored.
        Ranks in ``known`` (found by an earlier poll) are not read again: at 2,048 ranks a poll
        lists the folder and reads only the receipts that are new."""
        found = dict(known or {})
        seen = {receipt_key(step, rank, attempt) for rank in found}
        for info in self.objects.list(attempt_prefix(step, attempt)):
            if not info.key.endswith(".json") or info.key in seen:
                continue
            try:
                record = ShardRecord(**json.loads(self.objects.get(info.key)))
            except ObjectNotFound:
                continue
            except (TypeError, ValueError):
                continue  # not a receipt (a damaged or foreign object): never committed
            if (record.attempt, record.step) == (attempt, step) and record.key == shard_key(step, record.rank, attempt):
                found[record.rank] = record
        return found

    def commit(
        self,
        step: int,
        world_size: int,
        mesh: dict,
        tokens: float,
        progress: dict,
        timeout_s: float = 300.0,
        poll_s: float = 0.1,
        attempt: int = 0,
        deadline: float | None = None,
    ) -> Manifest:
        """Wait until every rank's receipt of this attempt is in, then write the manifest (the
        commit point). ``deadline`` (epoch seconds) bounds an emergency save: past it, nothing is
        committed and ``CommitFailed`` says so (the previous checkpoint stands)."""
        give_up = time.time() + timeout_s if deadline is None else min(time.time() + timeout_s, deadline)
        receipts: dict[int, ShardRecord] = {}
        while True:
            receipts = self.receipts(step, attempt, receipts)
            if len(receipts) >= world_size:
                break
            if time.time() > give_up:
                missing = sorted(set(range(world_size)) - set(receipts))
                why = (
                    "before the deadline"
                    if deadline is not None and give_up == deadline
                    else f"within {timeout_s:.0f} s"
                )
                raise CommitFailed(
                    f"step {step}: ranks {_ranges(missing)} did not finish their shards {why}; "
                    "the checkpoint is not committed"
                )
            time.sleep(poll_s)
        if deadline is not None and time.time() > deadline:
            raise CommitFailed(f"step {step}: every shard arrived, but after the deadline; not committed")
        manifest = Manifest(
            self.job,
            step,
            tokens,
            mesh,
            [receipts[r] for r in range(world_size)],
            time.time(),
            progress,
            FORMAT_VERSION,
            attempt,
        )
        self.objects.put(step_prefix(step) + MANIFEST, manifest.to_json().encode())
        return manifest

    def commit_in_memory(
        self,
        step: int,
        mesh: dict,
        tokens: float,
        progress: dict,
        kept: dict[int, tuple[str, int]],
        attempt: int = 0,
    ) -> Manifest:
        """Record ``step`` as restorable from peer memory: ``kept`` is every rank's (sha256, size) as
        the holders have it (``ShardCopies.kept``). Not a durable commit: ``committed`` ignores it."""
        files = [ShardRecord(IN_MEMORY, r, kept[r][1], kept[r][0], attempt, step) for r in range(len(kept))]
        manifest = Manifest(self.job, step, tokens, mesh, files, time.time(), progress, FORMAT_VERSION, attempt)
        self.objects.put(f"{MEMORY_PREFIX}step_{step:08d}.json", manifest.to_json().encode())
        return manifest

    def in_memory(self) -> list[int]:
        """Steps with a memory manifest, ascending."""
        found = (MEMORY_KEY.match(o.key) for o in self.objects.list(MEMORY_PREFIX))
        return sorted(int(m.group(1)) for m in found if m)

    def memory_manifest(self, step: int) -> Manifest:
        try:
            return Manifest.from_json(self.objects.get(f"{MEMORY_PREFIX}step_{step:08d}.json").decode())
        except ObjectNotFound:
            raise CheckpointError(f"no checkpoint in memory at step {step} for {self.job}") from None

    def drop_in_memory(self, keep: Callable[[int], bool]) -> list[int]:
        """Remove the memory manifests whose step ``keep`` refuses; the steps removed."""
        gone = [step for step in self.in_memory() if not keep(step)]
        self.objects.delete([f"{MEMORY_PREFIX}step_{step:08d}.json" for step in gone])
        return gone

    # ------------------------------------------------------------------ reading

    def committed(self) -> list[int]:
        """Steps with a manifest, ascending."""
        steps = set()
        for info in self.objects.list("step_"):
            parsed = key_step_attempt(info.key)
            if parsed and info.key == step_prefix(parsed[0]) + MANIFEST:
                steps.add(parsed[0])
        return sorted(steps)

    def manifest(self, step: int) -> Manifest:
        try:
            return Manifest.from_json(self.objects.get(step_prefix(step) + MANIFEST).decode())
        except ObjectNotFound:
            raise CheckpointError(f"no committed checkpoint at step {step} for {self.job}") from None

    def latest(self, mesh: dict | None = None) -> Manifest | None:
        for step in reversed(self.committed()):
            manifest = self.manifest(step)
            if mesh is None or _same_mesh(manifest.mesh, mesh):
                return manifest
        return None

    def read_shard(self, manifest: Manifest, rank: int) -> bytes:
        """One rank's shard, checked against the manifest; raises ``CheckpointError`` naming it."""
        record = manifest.files[rank]
        try:
            payload = self.objects.get(record.key)
        except ObjectNotFound:
            raise CheckpointError(f"step {manifest.step}: shard {record.key} is missing") from None
        if len(payload) != record.size or sha256_of(payload) != record.sha256:
            raise CheckpointError(
                f"step {manifest.step}: shard {record.key} is corrupt "
                f"({len(payload)} bytes, sha256 {sha256_of(payload)[:12]}..., manifest says "
                f"{record.size} bytes, {record.sha256[:12]}...)"
            )
        return payload

    def verify_shard_streaming(
        self, manifest: Manifest, rank: int, chunk_bytes: int = 8 << 20, on_bytes: Callable[[int], None] | None = None
    ) -> str | None:
        """One rank's shard checked against the manifest in ``chunk_bytes`` pieces (constant memory, so a
        dashboard can verify terabytes); the problem, or None. ``on_bytes`` hears each piece's size."""
        record = manifest.files[rank]
        digest, size = hashlib.sha256(), 0
        try:
            with self.objects.open(record.key) as handle:
                while piece := handle.read(chunk_bytes):
                    digest.update(piece)
                    size += len(piece)
                    if on_bytes is not None:
                        on_bytes(len(piece))
        except ObjectNotFound:
            return f"step {manifest.step}: shard {record.key} is missing"
        except StorageError as exc:
            return f"step {manifest.step}: shard {record.key} could not be read: {exc}"
        if size != record.size or digest.hexdigest() != record.sha256:
            return (
                f"step {manifest.step}: shard {record.key} is corrupt ({size} bytes, sha256 "
                f"{digest.hexdigest()[:12]}..., manifest says {record.size} bytes, {record.sha256[:12]}...)"
            )
        return None

    def verify(self, step: int) -> list[str]:
        """Every problem with a committed checkpoint (empty when every shard checks out); shards are
        streamed, so memory does not grow with their size."""
        manifest = self.manifest(step)
        problems = (self.verify_shard_streaming(manifest, rank) for rank in range(len(manifest.files)))
        return [p for p in problems if p]

    # ------------------------------------------------------------------ retention and garbage

    def delete_step(self, step: int) -> None:
        keys = [o.key for o in self.objects.list(step_prefix(step))]
        manifest = [k for k in keys if k.endswith(MANIFEST)]
        self.objects.delete(manifest)  # uncommit first: readers never see a manifest without shards
        self.objects.delete([k for k in keys if k not in manifest])

    def reject(self, step: int, reason: str) -> None:
        """Uncommit a step found damaged at resume (its shards stay for inspection until garbage
        collection), so retention never keeps it in place of a good one."""
        note = json.dumps({"reason": reason, "at": time.time()}).encode()
        self.objects.put(step_prefix(step) + "rejected.json", note)
        self.objects.delete([step_prefix(step) + MANIFEST])

    def apply_retention(self, keep_last: int, keep_every: int = 0) -> list[int]:
        """Keep the last ``keep_last`` commits and the first commit of every ``keep_every``-step
        window (``step // keep_every``), whatever the interval saved at."""
        steps = self.committed()
        removed = [s for s in steps if s not in retained(steps, keep_last, keep_every)]
        for step in removed:
            self.delete_step(step)
        return removed

    def collect_garbage(self, attempt: int, margin_s: float = GC_MARGIN_S, now: float | None = None) -> dict:
        """Remove what ``is_garbage`` says no writer can still be on, and abort incomplete uploads
        of the same kind."""
        now = time.time() if now is None else now
        objects = self.objects.list("step_")
        committed = {}
        for info in objects:
            parsed = key_step_attempt(info.key)
            if parsed and info.key == step_prefix(parsed[0]) + MANIFEST:
                committed[parsed[0]] = self._referenced(parsed[0])
        newest = max((s for s, (a, _) in committed.items() if a == attempt), default=None)
        stale = [o for o in objects if is_garbage(o, attempt, newest, committed, now, margin_s)]
        self.objects.delete([o.key for o in stale])
        aborted = self.objects.abort_incomplete_uploads(
            "step_",
            lambda key, modified: is_garbage(ObjectInfo(key, 0, modified), attempt, newest, committed, now, margin_s),
        )
        return {"removed": sorted(o.key for o in stale), "aborted_uploads": aborted}

    def _referenced(self, step: int) -> tuple[int, frozenset[str]]:
        try:
            manifest = self.manifest(step)
        except CheckpointError:  # removed meanwhile by retention: nothing of it is referenced
            return -1, frozenset()
        keys = {f.key for f in manifest.files} | {receipt_key(step, f.rank, f.attempt) for f in manifest.files}
        return manifest.attempt, frozenset(keys)


def is_garbage(
    info: ObjectInfo, attempt: int, newest_commit: int | None, committed: dict, now: float, margin_s: float
) -> bool:
    """Whether no writer can still be on ``info``: it is not a manifest, not part of a committed
    checkpoint, older than ``margin_s``, and either of an attempt that is over (an earlier one) or,
    in this attempt, of a step older than the newest commit (every rank saves the same steps in
    order, so once step S is committed nobody is still writing a step below S). A step above the
    newest commit may be in flight on a slow rank: never garbage while this attempt lives."""
    parsed = key_step_attempt(info.key)
    if parsed is None or info.key.endswith("/" + MANIFEST) or info.key.endswith("/rejected.json"):
        return False
    step, owner = parsed
    if step in committed and info.key in committed[step][1]:
        return False
    if now - info.modified < margin_s:
        return False
    if owner is None or owner < attempt:
        return True
    return owner == attempt and newest_commit is not None and step < newest_commit


def retained(steps: list[int], keep_last: int, keep_every: int = 0) -> set[int]:
    """The committed steps retention keeps: the last ``keep_last`` and, when ``keep_every`` > 0,
    the first committed step of every window ``[k * keep_every, (k + 1) * keep_every)``."""
    steps = sorted(steps)
    keep = set(steps[-keep_last:]) if keep_last > 0 else set()
    if keep_every > 0:
        first: dict[int, int] = {}
        for step in steps:
            first.setdefault(step // keep_every, step)
        keep |= set(first.values())
    return keep


def _ranges(ranks: list[int]) -> str:
    """``[0, 1, 2, 7]`` as ``0-2, 7``: at 2,048 ranks the list of missing ones can be long."""
    parts, start = [], None
    for i, rank in enumerate(ranks):
        if start is None:
            start = rank
        if i + 1 == len(ranks) or ranks[i + 1] != rank + 1:
            parts.append(str(start) if start == rank else f"{start}-{rank}")
            start = None
    return "[" + ", ".join(parts) + "]"


def _same_mesh(a: dict, b: dict) -> bool:
    keys = ("pipeline", "data", "expert", "tensor", "world_size")
    return all(a.get(k) == b.get(k) for k in keys)
