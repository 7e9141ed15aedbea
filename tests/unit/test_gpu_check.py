"""The GPU rehearsal (bench/gpu_check.py): refuses without CUDA; its code path runs on CPU with a flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bench.gpu_check import peak_for, torchtitan_flops_per_token, v3_shaped_model


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
        check=False,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_clearly():
    proc = _run()
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_known_gpus_have_their_dense_bf16_peak():
    assert peak_for("NVIDIA H200") == 989.0
    assert peak_for("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_for("NVIDIA H100 PCIe") == 756.0
    assert peak_for("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_for("Some Future Accelerator") is None


def test_torchtitans_mfu_convention_counts_every_key_where_the_planner_counts_half():
    """torchtitan ``get_moe_model_nparams_and_flops`` (torchtitan/models/utils.py, 76dd118):
    6 x active non-embedding params + 6 * n_layers * n_heads * (qk_nope + qk_rope + v) * seq_len."""
    from orchestrator.plan.flops import model_flops_per_token
    from orchestrator.spec.schema import ModelSpec

    model = ModelSpec(**v3_shaped_model(4, tiny=False))
    seq = 4096
    torchtitan_attention = 6 * model.n_layers * model.n_heads * (128 + 64 + 128) * seq
    planner_attention = torchtitan_attention / 2  # causal: half the keys
    weights = model_flops_per_token(model, seq) - planner_attention
    assert torchtitan_flops_per_token(model, seq) == pytest.approx(weights + torchtitan_attention, rel=1e-12)


@pytest.mark.slow
def test_the_rehearsal_trains_and_reports_on_cpu(tmp_path):
    out = tmp_path / "result.json"
    proc = _run("--allow-cpu", "--steps", "4", "--warmup", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == "gloo" and result["cuda"] is False and result["steps"] == 4
    assert result["tokens_per_s"] > 0 and result["step_time_s"] > 0 and 0 < result["mfu"] < 1
    assert result["mfu_main_model"] < result["mfu_torchtitan_convention"]  # all keys counted
    assert result["planned_memory_gb"] > 0 and result["peak_memory_gb"] > 0
    assert result["model"]["routed_experts"] == 16 and result["model"]["n_layers"] == 3
    assert "CPU stand-in" in proc.stdout
