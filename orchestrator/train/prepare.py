"""``orch data prepare``: text files -> token shards the trainer memory-maps.

Tokens are UTF-8 bytes (ids 0-255): no tokenizer can be downloaded at run time here, and bytes
need none. Shards are ``shard_NNNNN.bin`` (uint16 or uint32, native little-endian) plus
``manifest.json``; every file is written under a temporary name and renamed, and the manifest
last, so a crash never leaves a half-written data set that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from orchestrator.errors import OrchError

BYTE_VOCAB = 256


class PrepareError(OrchError):
    pass


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_shards(inputs: list[str], out_dir: str, shard_tokens: int = 1 << 24, dtype: str = "uint16") -> dict:
    files = [Path(p) for p in inputs]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise PrepareError(f"input files not found: {', '.join(missing)}")
    if shard_tokens < 1:
        raise PrepareError("--shard-tokens must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").exists():
        raise PrepareError(f"{out} already holds a prepared data set (manifest.json); choose an empty folder")
    buffer, shards, total = bytearray(), [], 0

    def flush(chunk: bytes) -> None:
        name = f"shard_{len(shards):05d}.bin"
        array = np.frombuffer(chunk, dtype=np.uint8).astype(dtype)
        _write_atomic(out / name, array.tobytes())
        shards.append({"file": name, "tokens": len(array)})

    for path in files:
        buffer += path.read_bytes()
        while len(buffer) >= shard_tokens:
            flush(bytes(buffer[:shard_tokens]))
            del buffer[:shard_tokens]
    if buffer:
        flush(bytes(buffer))
    total = sum(s["tokens"] for s in shards)
    if total == 0:
        raise PrepareError("the inputs hold no text")
    manifest = {
        "tokenizer": "utf-8 bytes",
        "vocab_size": BYTE_VOCAB,
        "dtype": dtype,
        "tokens": total,
        "shards": shards,
        "inputs": [str(p) for p in files],
    }
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2).encode())
    return manifest
