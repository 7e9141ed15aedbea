"""bf16 runs keep fp32 master weights and accumulate gradients in fp32 (issue 15): the DeepSpeed
config orch writes (``train/pipeline.py`` ``deepspeed_config``), given to a real DeepSpeed engine on
its CPU accelerator, makes DeepSpeed choose its ``BF16_Optimizer`` (``deepspeed/runtime/engine.py``
``_do_optimizer_sanity_check``: bf16 weights, fp32 ``grad_accum_dtype`` and ZeRO stage 1), whose master
weights and gradient accumulators are fp32. Without ``grad_accum_dtype`` DeepSpeed would take its ZeRO
optimizer with bf16 gradients instead, and this test would fail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_bf16_training_keeps_fp32_master_weights_and_fp32_gradient_accumulation(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.bf16_engine", str(tmp_path / "rendezvous")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["optimizer"] == "BF16_Optimizer"
    assert facts["weights"] == "torch.bfloat16"
    assert facts["master"] == ["torch.float32"] and facts["accumulators"] == ["torch.float32"]
    # one optimizer step after two accumulated micro-batches, applied to the fp32 master weights
    assert facts["accumulation_steps"] == 2 and facts["steps"] == 1 and facts["master_moved"]
