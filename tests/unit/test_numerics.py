"""DeepSeek-V3 numerics: YaRN, the MTP-weight and bias-speed schedules, init std, fp32 balance
state under bf16, and fp8 refused until it is implemented."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.errors import OrchError
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.train.layers import attention_scale, rotary_frequencies
from orchestrator.train.progress import Progress, Schedule
from orchestrator.train.support import check_runnable
from tests.conftest import V3_SPEC


@pytest.fixture(scope="module")
def v3():
    return load_spec(V3_SPEC)


def reference_freqs(dim, seqlen, base, factor, beta_fast, beta_slow, original_seq_len):
    """Transcribed from deepseek-ai/DeepSeek-V3 inference/model.py ``precompute_freqs_cis`` (main branch,
    commit with config_671B.json's yarn fields), computed in fp32 as there; the frequencies only."""

    def find_correction_dim(num_rotations):
        return dim * math.log(original_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(find_correction_dim(beta_fast)), 0)
    high = min(math.ceil(find_correction_dim(beta_slow)), dim - 1)
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if seqlen > original_seq_len:
        max_val = high + 0.001 if low == high else high
        smooth = 1 - torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (max_val - low), 0, 1)
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


@pytest.mark.parametrize("seq_len", [4096, 32768, 131072])
def test_rope_frequencies_follow_deepseeks_reference(v3, seq_len):
    m = v3.model
    assert (m.rope_factor, m.original_seq_len, m.beta_fast, m.beta_slow, m.mscale) == (40, 4096, 32, 1, 1.0)
    ours = rotary_frequencies(m, seq_len)
    theirs = reference_freqs(
        m.qk_rope_head_dim, seq_len, m.rope_theta, m.rope_factor, m.beta_fast, m.beta_slow, m.original_seq_len
    )
    assert torch.allclose(ours.float(), theirs, rtol=1e-6, atol=0)


def test_yarn_interpolates_only_the_slow_dimensions_of_long_phases(v3):
    m = v3.model
    plain, long = rotary_frequencies(m, 4096), rotary_frequencies(m, 32768)
    ratio = (plain / long).tolist()
    # correction range for dim 64, base 1e4, 4096 tokens: floor(10.47) = 10 .. ceil(22.5) = 23
    assert ratio[:11] == pytest.approx([1.0] * 11)
    assert ratio[23:] == pytest.approx([40.0] * 9)
    assert all(1.0 < r < 40.0 for r in ratio[11:23])
    base = (m.qk_nope_head_dim + m.qk_rope_head_dim) ** -0.5
    assert attention_scale(m, 4096) == base
    assert attention_scale(m, 131072) == pytest.approx(base * (0.1 * math.log(40) + 1) ** 2)


def test_v3_schedules_drop_the_mtp_weight_and_freeze_the_bias_at_v3s_token_counts(v3):
    plan = make_plan(v3)
    schedule = Schedule(v3, plan.mesh.data)

    def at(tokens):
        return Progress(tokens=tokens)

    assert schedule.next_step(at(9.99e12)).mtp_weight == 0.3
    assert schedule.next_step(at(10.0e12)).mtp_weight == 0.1
    assert schedule.bias_update_speed(at(14.29e12)) == 0.001
    assert schedule.bias_update_speed(at(14.3e12)) == 0.0  # the last 500B of 14.8T tokens


def test_a_zero_bias_speed_leaves_the_balance_bias_where_it_is(v3):
    from orchestrator.train.moe import Router

    local = load_spec(V3_SPEC, profile="local")
    router = Router(local.model, local.training.balance)
    router.load += torch.arange(float(local.model.n_routed_experts))
    router.update_bias(speed=0.0)
    assert torch.count_nonzero(router.balance_bias) == 0
    router.load += torch.arange(float(local.model.n_routed_experts))
    router.update_bias()
    assert torch.count_nonzero(router.balance_bias) == local.model.n_routed_experts


def test_weights_start_with_the_configured_std(v3):
    from orchestrator.train.moe import init_weights

    layer = torch.nn.Linear(1024, 1024, bias=False)
    init_weights(layer, 1, v3.model.init_std)
    assert v3.model.init_std == 0.006
    assert float(layer.weight.std()) == pytest.approx(0.006, rel=0.01)


def test_balance_state_stays_fp32_when_the_model_is_cast_to_bf16():
    from orchestrator.train.moe import Router

    local = load_spec(V3_SPEC, profile="local")
    router = Router(local.model, local.training.balance).bfloat16()
    assert router.weight.dtype == torch.bfloat16
    assert router.balance_bias.dtype == torch.float32 and router.load.dtype == torch.float32
    router.balance_bias.fill_(1.0)
    router.load[0] = 10.0
    router.update_bias(speed=0.001)
    # 1 + 0.001 is representable in fp32, not in bf16 (spacing 2^-7 near 1): the step would be lost
    assert float(router.balance_bias[1]) == pytest.approx(1.001, abs=1e-7)
    assert float(torch.tensor(1.0, dtype=torch.bfloat16) + 0.001) == 1.0


def test_fp8_is_planned_but_refused_for_training(v3):
    plan = make_plan(v3)  # the planner still plans it (memory, cost)
    assert v3.training.precision == "fp8" and plan.total_gpu_hours > 0
    with pytest.raises(OrchError) as caught:
        check_runnable(v3)
    text = str(caught.value)
    assert "training.precision" in text and "fp8" in text and "--set training.precision=bf16" in text
    assert caught.value.exit_code == 2
    runnable = load_spec(V3_SPEC, overrides=["training.precision=bf16", "parallelism.schedule=1f1b"])
    check_runnable(runnable)
