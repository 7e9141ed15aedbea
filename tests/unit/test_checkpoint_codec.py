"""Checkpoint shards load without executing anything: tensors in safetensors, the rest in JSON,
pickles refused with a clear error."""

from __future__ import annotations

import io
import pickle
import random
from collections import OrderedDict
from enum import IntEnum

import numpy as np
import pytest
import torch

from orchestrator.checkpoint.codec import CheckpointFormatError, decode, encode, encode_parts


class Stage(IntEnum):
    OPTIMIZER_STATES = 1


def trainer_like_state() -> dict:
    return {
        "rank": 3,
        "placement": {"stage": 1, "data_rank": 0},
        "module": OrderedDict(
            w=torch.randn(4, 3),
            bias=torch.zeros(5, dtype=torch.bfloat16),
            routed=torch.arange(6, dtype=torch.int32),
            mask=torch.tensor([True, False]),
            empty=torch.zeros(0, 3),
        ),
        "optimizer": {
            "base_optimizer_state": {
                "state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.ones(3)}},
                "param_groups": [
                    {"lr": 1e-3, "betas": (0.9, 0.95), "params": [0], "foreach": None, "eps": float("inf")}
                ],
            },
            "zero_stage": Stage.OPTIMIZER_STATES,
            "ds_version": "0.19.8",
            "partition_count": [2],
        },
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "flags": [True, None, 2.5, "x"],
    }


def assert_same(a, b):
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_a_trainer_state_round_trips_exactly():
    state = trainer_like_state()
    loaded = decode(encode(state))
    expected = {**state, "optimizer": {**state["optimizer"], "zero_stage": 1}}  # an IntEnum is stored as its int
    assert_same(expected, loaded)
    np.random.set_state(loaded["rng"]["numpy"])  # the RNG states are usable as they come back
    random.setstate(loaded["rng"]["python"])
    torch.set_rng_state(loaded["rng"]["torch"])


def test_saving_an_object_names_where_it_is():
    with pytest.raises(CheckpointFormatError, match=r"state\.optimizer\.loss_scaler: a .*Scaler cannot be stored"):
        decode(encode({"optimizer": {"loss_scaler": type("Scaler", (), {})()}}))


class Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['PWNED']).write_text('ran')",))


def test_pickles_are_refused_and_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED", str(marker))
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2), "payload": Exploit()}, buffer)
    for payload in (buffer.getvalue(), pickle.dumps(Exploit())):
        with pytest.raises(CheckpointFormatError, match="is a pickle .* orch does not load pickles"):
            decode(payload, "step 10 rank 0")
    assert not marker.exists()


def test_a_damaged_header_is_a_clear_error():
    payload = encode({"w": torch.ones(3)})
    with pytest.raises(CheckpointFormatError, match="header length"):
        decode(b"\xff" * 8 + payload[8:])
    with pytest.raises(CheckpointFormatError, match="not a safetensors payload"):
        decode(b"abc")


def test_the_payload_is_read_in_place_without_one_big_copy():
    weights = torch.randn(1000)
    encoded = encode_parts({"w": weights, "n": 3})
    assert any(p.obj is not None and np.shares_memory(np.asarray(p), weights.numpy()) for p in encoded.parts[2:])
    reader, chunks = encoded.reader(), []
    assert reader.seek(0, io.SEEK_END) == encoded.size
    reader.seek(0)
    while chunk := reader.read(333):  # uploads read in parts of their own size
        chunks.append(chunk)
    payload = b"".join(chunks)
    assert payload == encode({"w": weights, "n": 3})
    assert __import__("hashlib").sha256(payload).hexdigest() == encoded.sha256()
    assert torch.equal(decode(payload)["w"], weights)
