"""One DeepSpeed engine built from the config orch writes for a bf16 run (``train/pipeline.py``
``deepspeed_config``), on DeepSpeed's CPU accelerator in one gloo process of its own; it trains
one step of two accumulated micro-batches and prints, as JSON, which optimizer DeepSpeed chose
and the dtypes of the weights, master weights and gradient accumulators. Run by
tests/unit/test_precision.py in a subprocess, so the test process keeps no process group."""

from __future__ import annotations

import json
import os
import sys


def main(rendezvous: str) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"})
    import deepspeed
    import torch
    import torch.distributed as dist

    from orchestrator.plan.planner import make_plan
    from orchestrator.spec.loader import load_spec
    from orchestrator.train.pipeline import deepspeed_config
    from tests.conftest import V3_SPEC

    spec = load_spec(V3_SPEC, profile="local", overrides=["training.precision=bf16"])
    plan = make_plan(spec)
    mbs = spec.parallelism.micro_batch_size
    config = deepspeed_config(spec, plan, first_batch=2 * mbs * plan.mesh.data, use_bf16=True)
    config["train_batch_size"] = mbs * config["gradient_accumulation_steps"]  # one data-parallel rank here
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 1))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    optimizer = engine.optimizer
    master = getattr(optimizer, "fp32_groups_flat_partition", [])  # BF16_Optimizer's; others differ
    before = [p.clone() for p in master]
    for _ in range(config["gradient_accumulation_steps"]):
        x = torch.randn(mbs, 16, dtype=torch.bfloat16)
        loss = engine(x).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    print(
        json.dumps(
            {
                "accumulation_steps": config["gradient_accumulation_steps"],
                "optimizer": type(optimizer).__name__,
                "weights": str(next(engine.module.parameters()).dtype),
                "master": sorted({str(p.dtype) for p in master}),
                "accumulators": sorted({str(g.dtype) for g in getattr(optimizer, "fp32_groups_gradients_flat", [])}),
                "master_moved": any(bool((p != old).any()) for p, old in zip(master, before)),
                "steps": engine.global_steps,
            }
        )
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
