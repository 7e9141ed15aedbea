"""The published figures of the DeepSeek-V3 run (shared/REFERENCE.md) that every plan is compared with."""

from __future__ import annotations

REFERENCE_NAME = "deepseek-v3"

# V3 technical report, Table 1: H800 GPU-hours per phase and dollars at $2 per GPU-hour.
REFERENCE_PHASE_GPU_HOURS = {
    "pre_training": 2_664_000,
    "context_extension": 119_000,
    "post_training": 5_000,
}
REFERENCE_GPU_HOURS = 2_788_000
REFERENCE_COST_USD = 5_576_000
REFERENCE_PRICE_PER_GPU_HOUR = 2.0
REFERENCE_GPUS = 2048
REFERENCE_GPU_HOURS_PER_TRILLION_TOKENS = 180_000
REFERENCE_PRETRAIN_TOKENS = 14.8e12
REFERENCE_FLOPS_PER_TOKEN = 250e9  # ISCA'25 Table 2, 4K context, causal
REFERENCE_SECONDS_PER_STEP = 19.926  # ISCA'25 Table 4
REFERENCE_PARAMS_TOTAL = 671e9
REFERENCE_PARAMS_ACTIVE = 36.7e9  # README_WEIGHTS.md, main model


def reference_summary() -> dict:
    """The reference run as the plan, ledger and simulator report it."""
    return {
        "name": REFERENCE_NAME,
        "gpus": REFERENCE_GPUS,
        "gpu_hours": REFERENCE_GPU_HOURS,
        "cost_usd": REFERENCE_COST_USD,
        "phases": dict(REFERENCE_PHASE_GPU_HOURS),
        "gpu_hours_per_trillion_tokens": REFERENCE_GPU_HOURS_PER_TRILLION_TOKENS,
    }


def compare_phases(phase_gpu_hours: dict[str, float]) -> list[dict]:
    """Side-by-side rows: each reference phase against the plan's phases whose name starts with it."""
    rows = []
    for name, ref in REFERENCE_PHASE_GPU_HOURS.items():
        mine = sum(h for phase, h in phase_gpu_hours.items() if phase.startswith(name))
        rows.append(
            {"phase": name, "gpu_hours": mine, "reference_gpu_hours": ref, "ratio": mine / ref if ref else None}
        )
    total = sum(phase_gpu_hours.values())
    rows.append(
        {
            "phase": "total",
            "gpu_hours": total,
            "reference_gpu_hours": REFERENCE_GPU_HOURS,
            "ratio": total / REFERENCE_GPU_HOURS,
        }
    )
    return rows
