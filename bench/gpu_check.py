"""GPU rehearsal: train a V3-shaped model that fills most of one CUDA device and report how it ran.

``make gpu-check`` (``python -m bench.gpu_check``). What it runs is the production path: the spec
goes through the planner, then ``Trainer`` builds the DeepSpeed pipeline engine (world size 1, all
experts local) over an NCCL process group, bf16 with fp32 master weights and gradient accumulation,
activation checkpointing per block and chunked cross-entropy, for a few hundred steps. It reports
tokens/s, step time, model FLOPs utilisation (FLOPs per token from the planner, peak from the
table below or ``--peak-tflops``) and peak memory against the planner's estimate for the config.

Without CUDA it refuses (exit status 2) unless ``--allow-cpu`` is given, which runs the same code
on a tiny config over gloo so that this path is tested on CPU (``tests/unit/test_gpu_check.py``);
CPU figures say nothing about GPUs and are labelled so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

# dense BF16 peak TFLOP/s (no sparsity), from the vendors' data sheets; matched on the device name
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H800": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIE": 756.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}
GIB = 1024**3


def peak_for(device_name: str) -> float | None:
    """The table's peak for a CUDA device name (longest matching key), or None if unknown."""
    name = device_name.upper()
    matches = [key for key in PEAK_BF16_TFLOPS if key in name]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def torchtitan_flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token as torchtitan counts them for its MFU, so a run of the same model there
    compares like with like: ``get_moe_model_nparams_and_flops`` (pytorch/torchtitan
    ``torchtitan/models/utils.py`` at 76dd118, called by ``DeepSeekV3ModelArgs.get_nparams_and_flops``
    in ``torchtitan/models/deepseek_v3/model/args.py``) takes 6 x the activated non-embedding
    parameters, as the planner does, plus 6 x layers x heads x (qk + v head dims) x seq_len for the
    attention scores: every key, where the planner (and DeepSeek's 250 GFLOPs/token) counts the half
    a causal mask leaves. torchtitan's DeepSeek-V3 has no MTP module, so neither does this count."""
    from orchestrator.plan.flops import attention_score_flops, model_flops_per_token

    return model_flops_per_token(model, seq_len) + model.n_layers * attention_score_flops(model, seq_len)


def v3_shaped_model(n_layers: int, tiny: bool) -> dict:
    """DeepSeek-V3's shape (MLA with both LoRA ranks, a shared expert plus top-8 of grouped sigmoid-routed
    experts, dense first blocks, one MTP module, V3's vocabulary) scaled to one device."""
    if tiny:
        return {
            "vocab_size": 256,
            "dim": 64,
            "n_layers": n_layers,
            "n_dense_layers": 1,
            "inter_dim": 128,
            "moe_inter_dim": 32,
            "n_heads": 4,
            "q_lora_rank": 32,
            "kv_lora_rank": 32,
            "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 8,
            "v_head_dim": 16,
            "n_routed_experts": 16,
            "n_shared_experts": 1,
            "n_activated_experts": 4,
            "n_expert_groups": 4,
            "n_limited_groups": 2,
            "score_func": "sigmoid",
            "route_scale": 2.5,
            "mtp_depth": 1,
            "init_std": 0.02,
        }
    return {
        "vocab_size": 129280,
        "dim": 2048,
        "n_layers": n_layers,
        "n_dense_layers": 1,
        "inter_dim": 10944,
        "moe_inter_dim": 1408,
        "n_heads": 16,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "n_routed_experts": 64,
        "n_shared_experts": 1,
        "n_activated_experts": 8,
        "n_expert_groups": 8,
        "n_limited_groups": 4,
        "score_func": "sigmoid",
        "route_scale": 2.5,
        "mtp_depth": 1,
        "init_std": 0.006,
    }


def job_mapping(args, n_layers: int, device: str, peak: float, memory_gb: float) -> dict:
    seq, micro = (64, 2) if args.tiny else (args.seq_len, args.micro_batches)
    return {
        "name": "gpu-check",
        "model": v3_shaped_model(n_layers, args.tiny),
        "parallelism": {
            "pipeline": 1,
            "expert": 1,
            "micro_batch_size": 1,
            "schedule": "1f1b",
            "activation_checkpointing": True,
        },
        "resources": {
            "accelerator": {"type": device, "peak_bf16_tflops": peak, "memory_gb": memory_gb},
            "gpus_per_node": 1,
            "nodes": 1,
            "pools": [{"name": "one", "nodes": 1}],
        },
        "training": {"lr_schedule": {"peak": 3.0e-4, "warmup_steps": 10}, "expected_mfu": 0.4, "precision": "bf16"},
        "phases": [{"name": "rehearsal", "seq_len": seq, "global_batch": micro, "steps": args.steps}],
        "data": {"source": "synthetic", "seed": 1, "branching": 4},
        "checkpoint": {"uri": "file:///tmp/orch-gpu-check-unused"},
        "cost": {"price_per_gpu_hour": 0.0, "reference": "none"},
    }


def sized_spec(args, device: str, peak: float, memory_gb: float):
    """The deepest model whose planned memory stays within ``--fill`` of the device."""
    from orchestrator.errors import PlanError
    from orchestrator.plan.planner import make_plan
    from orchestrator.spec.loader import validate_mapping

    if args.tiny:
        spec = validate_mapping(job_mapping(args, 3, device, peak, memory_gb), "gpu-check")
        return spec, make_plan(spec)
    best = None
    for n_layers in range(2, 200):
        spec = validate_mapping(job_mapping(args, n_layers, device, peak, memory_gb), "gpu-check")
        try:
            plan = make_plan(spec)
        except PlanError:
            break
        if plan.worst_memory().total > args.fill * memory_gb * GIB:
            break
        best = spec, plan
    if best is None:
        raise SystemExit("gpu-check: not even a 2-block model fits the device's memory plan")
    return best


def device_facts(args) -> tuple[str, float, float]:
    """(device name, peak bf16 TFLOP/s, memory GiB) of CUDA device 0, or of the CPU stand-in."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", args.peak_tflops or 1.0, 4.0
    props = torch.cuda.get_device_properties(0)
    peak = args.peak_tflops or peak_for(props.name)
    if peak is None:
        raise SystemExit(f"gpu-check: no peak BF16 rate known for '{props.name}'; pass --peak-tflops")
    return props.name, peak, props.total_memory / GIB


def run(args) -> dict:
    import torch

    from orchestrator.train import collectives
    from orchestrator.train.trainer import Trainer

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(args.port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        os.environ.setdefault(key, value)
    name, peak, memory_gb = device_facts(args)
    spec, plan = sized_spec(args, name, peak, memory_gb)
    if torch.cuda.is_available():
        torch.cuda.set_device(0)
    backend = collectives.initialise()
    steps = []
    trainer = Trainer(spec, plan, steps.append)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train(args.steps)
    wall = time.perf_counter() - started
    collectives.shutdown()
    return summarise(args, spec, plan, steps, wall, name, peak, backend)


def summarise(args, spec, plan, steps: list[dict], wall: float, name: str, peak: float, backend: str) -> dict:
    import torch

    steady = steps[min(args.warmup, len(steps) - 1) :]
    step_s = statistics.median(m["step_time_s"] for m in steady)
    tokens_per_s = statistics.median(m["tokens_per_s"] for m in steady)
    flops = plan.flops_per_token + plan.mtp_flops_per_token
    if torch.cuda.is_available():
        peak_mem, what = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        peak_mem, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS (CPU)"
    planned = plan.worst_memory().total
    return {
        "device": name,
        "backend": backend,
        "cuda": torch.cuda.is_available(),
        "model": {
            "n_layers": spec.model.n_layers,
            "dim": spec.model.dim,
            "routed_experts": spec.model.n_routed_experts,
            "params": plan.params.total + plan.params.mtp,
            "active_params": plan.params.active,
        },
        "seq_len": spec.phases[0].seq_len,
        "global_batch": steps[-1]["global_batch"],
        "steps": len(steps),
        "wall_s": wall,
        "step_time_s": step_s,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops,
        "peak_tflops": peak,
        "mfu": tokens_per_s * flops / (peak * 1e12),
        "mfu_main_model": tokens_per_s * plan.flops_per_token / (peak * 1e12),
        "mfu_torchtitan_convention": tokens_per_s
        * torchtitan_flops_per_token(spec.model, spec.phases[0].seq_len)
        / (peak * 1e12),
        "peak_memory_gb": peak_mem / GIB,
        "peak_memory_source": what,
        "planned_memory_gb": planned / GIB,
        "memory_vs_plan": peak_mem / planned,
        "first_loss": steps[0]["loss"],
        "last_loss": steps[-1]["loss"],
    }


def render(result: dict) -> str:
    cpu_note = "" if result["cuda"] else "  (CPU stand-in: these figures say nothing about a GPU)"
    return "\n".join(
        [
            f"gpu-check on {result['device']} over {result['backend']}{cpu_note}",
            f"  model: {result['model']['n_layers']} blocks, dim {result['model']['dim']}, "
            f"{result['model']['routed_experts']} routed experts, {result['model']['params'] / 1e9:.2f}B parameters",
            f"  {result['steps']} steps of {result['global_batch']} x {result['seq_len']} tokens: "
            f"step {result['step_time_s']:.3f} s, {result['tokens_per_s']:,.0f} tokens/s",
            f"  MFU {100 * result['mfu']:.1f}% (main model only: {100 * result['mfu_main_model']:.1f}%; "
            f"counted as torchtitan does: {100 * result['mfu_torchtitan_convention']:.1f}%) "
            f"of {result['peak_tflops']:g} TFLOP/s",
            f"  peak memory {result['peak_memory_gb']:.2f} GiB ({result['peak_memory_source']}) vs planned "
            f"{result['planned_memory_gb']:.2f} GiB: {result['memory_vs_plan']:.2f}x",
            f"  loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}",
        ]
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the medians")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--micro-batches", type=int, default=4, help="sequences per step")
    parser.add_argument("--fill", type=float, default=0.8, help="fraction of device memory the plan may use")
    parser.add_argument("--peak-tflops", type=float, help="override the table's peak BF16 rate")
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU over gloo (tests only)")
    parser.add_argument("--tiny", action="store_true", help="a tiny config (with --allow-cpu)")
    parser.add_argument("--port", type=int, default=29517)
    parser.add_argument("--json", help="also write the result as JSON to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "gpu-check: no CUDA device here (torch.cuda.is_available() is False); this rehearsal needs one "
            "GPU. Run it on a GPU machine: make gpu-check",
            file=sys.stderr,
        )
        return 2
    if args.allow_cpu and not torch.cuda.is_available():
        args.tiny = True
    result = run(args)
    print(render(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
