"""Checkpoints on an object store: rank shards, receipts, and a manifest that commits them.

Layout under the job's prefix::

    step_00000120/rank_00003.pt      one rank's state (its stage, its experts, its ZeRO-1 shard ...)
    step_00000120/rank_00003.json    receipt: size and sha256 of that shard, written after it
    step_00000120/manifest.json      written last, once every receipt exists: the commit point

A checkpoint without its manifest does not exist for readers; ``latest`` and ``committed`` look at
manifests only, never at shard listings. Retention deletes a manifest before its shards, so a
reader never sees a manifest whose shards are gone. ``collect_garbage`` removes shards of steps that
never committed and aborts multipart uploads left by crashed writers.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field

from orchestrator.checkpoint.objects import ObjectNotFound, ObjectStore, StorageError
from orchestrator.errors import OrchError

MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step_(\d{8})/")
FORMAT_VERSION = 1


class CheckpointError(OrchError):
    pass


def step_prefix(step: int) -> str:
    return f"step_{step:08d}/"


def shard_key(step: int, rank: int) -> str:
    return f"{step_prefix(step)}rank_{rank:05d}.pt"


def receipt_key(step: int, rank: int) -> str:
    return f"{step_prefix(step)}rank_{rank:05d}.json"


@dataclass
class ShardRecord:
    key: str
    rank: int
    size: int
    sha256: str


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        data = _upgrade(data)
        data["files"] = [ShardRecord(**f) for f in data["files"]]
        return cls(**data)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _upgrade(data: dict) -> dict:
    """Read older manifests: fill fields added since (none yet beyond the version itself)."""
    data.setdefault("format_version", 1)
    data.setdefault("progress", {})
    return data


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CheckpointStore:
    """One job's checkpoints on an object store."""

    def __init__(self, objects: ObjectStore, job: str):
        self.objects, self.job = objects, job

    # ------------------------------------------------------------------ writing

    def put_shard(self, step: int, rank: int, payload: bytes) -> ShardRecord:
        """Upload one rank's shard, then its receipt (the receipt says the shard is whole)."""
        record = ShardRecord(shard_key(step, rank), rank, len(payload), sha256_of(payload))
        self.objects.put(record.key, payload)
        self.objects.put(receipt_key(step, rank), json.dumps(asdict(record)).encode())
        return record

    def receipts(self, step: int) -> dict[int, ShardRecord]:
        found = {}
        for info in self.objects.list(step_prefix(step)):
            if info.key.endswith(".json") and "/rank_" in info.key:
                record = ShardRecord(**json.loads(self.objects.get(info.key)))
                found[record.rank] = record
        return found

    def commit(self, step: int, world_size: int, mesh: dict, tokens: float, progress: dict,
               timeout_s: float = 300.0, poll_s: float = 0.1) -> Manifest:
        """Wait until every rank's receipt is in, then write the manifest (the commit point)."""
        deadline = time.time() + timeout_s
        while True:
            receipts = self.receipts(step)
            if len(receipts) >= world_size:
                break
            if time.time() > deadline:
                missing = sorted(set(range(world_size)) - set(receipts))
                raise CheckpointError(f"step {step}: ranks {missing} did not finish their shards within "
                                      f"{timeout_s:.0f} s; the checkpoint is not committed")
            time.sleep(poll_s)
        manifest = Manifest(self.job, step, tokens, mesh, [receipts[r] for r in range(world_size)], time.time(),
                            progress)
        self.objects.put(step_prefix(step) + MANIFEST, manifest.to_json().encode())
        return manifest

    # ------------------------------------------------------------------ reading

    def committed(self) -> list[int]:
        """Steps with a manifest, ascending."""
        steps = set()
        for info in self.objects.list(""):
            match = STEP_DIR.match(info.key)
            if match and info.key.endswith("/" + MANIFEST):
                steps.add(int(match.group(1)))
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
            raise CheckpointError(f"step {manifest.step}: shard {record.key} is corrupt "
                                  f"({len(payload)} bytes, sha256 {sha256_of(payload)[:12]}..., manifest says "
                                  f"{record.size} bytes, {record.sha256[:12]}...)")
        return payload

    def verify(self, step: int) -> list[str]:
        """Every problem with a committed checkpoint (empty when every shard checks out)."""
        manifest = self.manifest(step)
        problems = []
        for rank in range(len(manifest.files)):
            try:
                self.read_shard(manifest, rank)
            except (CheckpointError, StorageError) as exc:
                problems.append(str(exc))
        return problems

    # ------------------------------------------------------------------ retention and garbage

    def delete_step(self, step: int) -> None:
        keys = [o.key for o in self.objects.list(step_prefix(step))]
        manifest = [k for k in keys if k.endswith(MANIFEST)]
        self.objects.delete(manifest)  # uncommit first: readers never see a manifest without shards
        self.objects.delete([k for k in keys if k not in manifest])

    def apply_retention(self, keep_last: int, keep_every: int = 0) -> list[int]:
        steps = self.committed()
        keep = set(steps[-keep_last:]) if keep_last > 0 else set()
        if keep_every > 0:
            keep |= {s for s in steps if s % keep_every == 0}
        removed = [s for s in steps if s not in keep]
        for step in removed:
            self.delete_step(step)
        return removed

    def collect_garbage(self, in_flight: set[int] | None = None, older_than_s: float = 0.0) -> dict:
        """Remove shards of steps that never committed (except those still being written) and abort
        incomplete multipart uploads."""
        in_flight = in_flight or set()
        committed = set(self.committed())
        stale: dict[int, list[str]] = {}
        now = time.time()
        for info in self.objects.list(""):
            match = STEP_DIR.match(info.key)
            if match:
                step = int(match.group(1))
                if step not in committed and step not in in_flight and now - info.modified >= older_than_s:
                    stale.setdefault(step, []).append(info.key)
        for keys in stale.values():
            self.objects.delete(keys)
        aborted = self.objects.abort_incomplete_uploads("", older_than_s)
        return {"removed_steps": sorted(stale), "aborted_uploads": aborted}


def _same_mesh(a: dict, b: dict) -> bool:
    keys = ("pipeline", "data", "expert", "tensor", "world_size")
    return all(a.get(k) == b.get(k) for k in keys)
