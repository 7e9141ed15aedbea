"""A rank's training state as bytes that can be loaded without executing anything.

Why: the Ray pods of every job can write the checkpoint bucket, so a shard is untrusted input to
the next job that loads it. ``torch.load(weights_only=False)`` unpickles, and unpickling runs
whatever code the pickle names: one compromised job would run code in the ranks of every later job.

The format (orch checkpoint format 2) is a safetensors file: its tensors are the state's tensors,
and its ``__metadata__`` holds the rest of the state as JSON (the "tree"), in which every tensor
is a reference ``{"__tensor__": "<n>"}``. Reading parses a length-prefixed JSON header and copies
raw bytes into tensors (the safetensors library); nothing is unpickled. The tree accepts exactly:

- ``torch.Tensor`` (any dtype safetensors stores) and ``numpy.ndarray`` (numeric dtypes; stored as a
  tensor with its numpy dtype recorded), e.g. RNG states;
- ``dict`` (string keys as JSON keys; other keys such as the optimizer's integer parameter ids are
  kept as ``[key, value]`` pairs), ``list``, ``tuple``;
- ``str``, ``int``, ``float`` (also inf and nan), ``bool``, ``None``. ``IntEnum`` values are ints.

Anything else (an arbitrary object, a class, a function) is refused when *saving*, with the path
to it, so an unloadable state is found at the first save, not at the first restart. A payload that
is a pickle (``torch.save``'s zip or a raw pickle stream) is refused when loading.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
from enum import Enum

import numpy as np
import torch

from orchestrator.errors import OrchError

FORMAT = "orch-checkpoint-2"
SHARD_SUFFIX = ".safetensors"
_TENSOR, _ARRAY, _TUPLE, _PAIRS = "__tensor__", "__ndarray__", "__tuple__", "__pairs__"
_MARKERS = (_TENSOR, _ARRAY, _TUPLE, _PAIRS)
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a pickle stream (protocol >= 2)


class CheckpointFormatError(OrchError):
    """A shard is not in a format orch loads (a pickle, a damaged header, an unknown version)."""


_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


class Encoded:
    """A safetensors payload as a list of buffers: the header, then each tensor's bytes in place.

    Why not ``safetensors.torch.save``: it copies every tensor into one ``bytes`` while holding the
    GIL (~0.1 s for 300 MB), which stalls the training thread running beside the checkpoint thread.
    Here nothing is copied: hashing (``hashlib`` releases the GIL on large buffers) and writing read
    the tensors' memory directly. The layout is the safetensors format (8-byte little-endian header
    length, JSON header with ``dtype``/``shape``/``data_offsets`` and ``__metadata__``, padded with
    spaces, then the data); loading uses the safetensors library itself."""

    def __init__(self, parts: list):
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for part in self.parts:
            digest.update(part)
        return digest.hexdigest()

    def reader(self) -> io.RawIOBase:
        return _PartsReader(self.parts)

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


def encode_parts(state: object) -> Encoded:
    """``state`` as a safetensors payload (tensors) with the rest of the tree in its metadata."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    header: dict = {"__metadata__": {"format": FORMAT, "tree": json.dumps(tree, allow_nan=True)}}
    buffers, offset = [], 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise CheckpointFormatError(f"tensor dtype {tensor.dtype} cannot be stored")
        raw = memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")  # no copy: the tensor's memory
        header[name] = {
            "dtype": _DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        buffers.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return Encoded([len(text).to_bytes(8, "little"), text, *buffers])


def encode(state: object) -> bytes:
    """``encode_parts`` as one ``bytes``."""
    return encode_parts(state).tobytes()


class _PartsReader(io.RawIOBase):
    """A seekable reader over a list of buffers (for uploads that read and seek a file object)."""

    def __init__(self, parts: list):
        self.parts, self.pos = [memoryview(p).cast("B") for p in parts], 0
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.starts[-1]}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, target) -> int:
        view, written = memoryview(target).cast("B"), 0
        while written < len(view) and self.pos < self.starts[-1]:
            index = bisect.bisect_right(self.starts, self.pos) - 1
            part, start = self.parts[index], self.pos - self.starts[index]
            count = min(len(view) - written, len(part) - start)
            view[written : written + count] = part[start : start + count]
            written += count
            self.pos += count
        return written


def decode(payload: bytes, where: str = "shard") -> object:
    """The state ``encode`` wrote; refuses pickles and anything that is not format 2."""
    from safetensors.torch import load

    try:
        metadata = _metadata(payload, where)
    except CheckpointFormatError:
        if payload[:4] == _PICKLE_MAGIC[0] or payload[:1] == _PICKLE_MAGIC[1]:
            raise CheckpointFormatError(
                f"{where} is a pickle (torch.save) payload; orch does not load pickles because unpickling runs "
                "code from the bucket. Checkpoints written before orch checkpoint format 2 cannot be resumed: "
                "start the job from scratch, or convert them on a trusted machine (see docs/checkpoints.md)"
            ) from None
        raise
    if metadata.get("format") != FORMAT:
        raise CheckpointFormatError(f"{where}: format {metadata.get('format')!r} is not {FORMAT!r}")
    try:
        tensors = load(payload)
        tree = json.loads(metadata["tree"])
    except Exception as exc:  # safetensors raises its own SafetensorError; json its own
        raise CheckpointFormatError(f"{where}: unreadable tensors or metadata: {exc}") from None
    return _decode(tree, tensors, where)


def _metadata(payload: bytes, where: str) -> dict:
    """The safetensors header's ``__metadata__`` (8-byte little-endian length, then JSON)."""
    if len(payload) < 8:
        raise CheckpointFormatError(f"{where}: {len(payload)} bytes is not a safetensors payload")
    length = int.from_bytes(payload[:8], "little")
    if length <= 0 or 8 + length > len(payload):
        raise CheckpointFormatError(f"{where}: the header length {length} does not fit in {len(payload)} bytes")
    try:
        header = json.loads(payload[8 : 8 + length])
    except ValueError as exc:
        raise CheckpointFormatError(f"{where}: the header is not JSON: {exc}") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or "tree" not in metadata:
        raise CheckpointFormatError(f"{where}: no orch metadata in the safetensors header")
    return metadata


def _encode(value: object, tensors: dict, path: str) -> object:
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().to("cpu").contiguous()
        return {_TENSOR: name}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise CheckpointFormatError(f"{path}: numpy dtype {value.dtype} cannot be stored")
        name = str(len(tensors))
        tensors[name] = torch.from_numpy(
            np.ascontiguousarray(value).astype(np.float64 if value.dtype.kind == "f" else np.int64)
        )
        return {_ARRAY: name, "dtype": value.dtype.str}
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in value):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {
            _PAIRS: [
                [_encode(k, tensors, f"{path} key"), _encode(v, tensors, f"{path}[{k!r}]")] for k, v in value.items()
            ]
        }
    raise CheckpointFormatError(
        f"{path}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored "
        "in a checkpoint (only tensors, arrays, numbers, strings, lists, tuples and dicts)"
    )


def _decode(node: object, tensors: dict, where: str) -> object:
    if isinstance(node, list):
        return [_decode(v, tensors, where) for v in node]
    if not isinstance(node, dict):
        return node
    if _TENSOR in node:
        return _tensor(tensors, node[_TENSOR], where)
    if _ARRAY in node:
        return _tensor(tensors, node[_ARRAY], where).numpy().astype(np.dtype(node["dtype"]))
    if _TUPLE in node:
        return tuple(_decode(v, tensors, where) for v in node[_TUPLE])
    if _PAIRS in node:
        return {_hashable(_decode(k, tensors, where)): _decode(v, tensors, where) for k, v in node[_PAIRS]}
    return {k: _decode(v, tensors, where) for k, v in node.items()}


def _tensor(tensors: dict, name: str, where: str) -> torch.Tensor:
    if name not in tensors:
        raise CheckpointFormatError(f"{where}: the metadata names tensor {name!r}, which the payload lacks")
    return tensors[name]


def _hashable(key: object) -> object:
    return tuple(key) if isinstance(key, list) else key
