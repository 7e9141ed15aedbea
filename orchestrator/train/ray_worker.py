"""Training under Ray Train: one TorchTrainer worker per device, DeepSpeed inside each.

Ray Train owns the worker group (start, torch.distributed set-up over gloo or NCCL, failure
detection); orch owns what runs in it (``Trainer``) and where it runs (the plan's rank mapping,
given as one label selector per worker by the control plane).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

# Every step's metrics go to orch's own channel (rank 0 -> the job's metrics sink). Ray Train's
# report() is a barrier across all workers in Ray Train V2 (it syncs a checkpoint directory name
# through an actor even without a checkpoint), so orch calls it every N steps and at the end.
RAY_REPORT_EVERY = 25


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config``: spec (mapping), max_steps, metrics_path, threads."""
    import deepspeed
    import ray.train
    import torch.distributed as dist

    from orchestrator.plan.planner import make_plan
    from orchestrator.spec import validate_mapping
    from orchestrator.train.trainer import Trainer

    started = time.time()
    torch.set_num_threads(int(config.get("threads", 1)))
    spec = validate_mapping(config["spec"], "job")
    plan = make_plan(spec)
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    metrics_path = config.get("metrics_path")
    sink = open(metrics_path, "a") if metrics_path and rank == 0 else None

    every = int(config.get("ray_report_every", RAY_REPORT_EVERY))
    total_steps = plan.total_steps if config.get("max_steps") is None else min(plan.total_steps, config["max_steps"])

    def report(metrics: dict) -> None:
        if sink:
            sink.write(json.dumps({**metrics, "since_launch_s": time.time() - started, "wall_time": time.time()}) + "\n")
            sink.flush()
        if metrics["step"] % every == 0 or metrics["step"] >= total_steps:
            ray.train.report(metrics)

    assignment = config.get("assignment")
    if assignment:
        check_node(plan, rank, assignment)
    checkpoints = None
    if config.get("job_id"):
        from orchestrator.checkpoint.locate import open_job_checkpoints
        from orchestrator.clock import SystemClock
        from orchestrator.train.trainer import CheckpointSetup

        checkpoints = CheckpointSetup(open_job_checkpoints(spec.checkpoint, config["job_id"],
                                                           Path(config["home"]) if config.get("home") else None),
                                      SystemClock())
    trainer = Trainer(spec, plan, report, checkpoints=checkpoints)
    if config.get("describe_dir"):
        Path(config["describe_dir"], f"rank{rank}.json").write_text(json.dumps(trainer.describe()))
    runner = config.get("runner")
    control = make_control(runner, rank) if runner is not None else None
    trainer.train(config.get("max_steps"), control)
    if trainer.checkpointer is not None:
        trainer.checkpointer.wait()
    if runner is not None and rank == 0 and trainer.emergency is not None:
        ray.get(runner.checkpoint_result.remote(trainer.emergency))


def check_node(plan, rank: int, assignment: list[str]) -> None:
    """The plan's rank -> node mapping is the contract: refuse to train on any other node."""
    import ray

    from orchestrator.train.pipeline import RuntimeLayoutError

    want = assignment[plan.mesh.placement(rank).node]
    got = ray.get_runtime_context().get_node_labels().get("orch-node")
    if got != want:
        raise RuntimeLayoutError(f"rank {rank} runs on node {got} but the plan puts it on {want}")


def make_control(runner, rank: int):
    """Rank 0 hands each step's metrics to the job's runner and receives a directive; a broadcast
    gives every rank the same directive for the same step."""
    import ray
    import torch.distributed as dist

    from orchestrator.control.directives import DIRECTIVES

    def control(metrics: dict) -> tuple[str, float | None]:
        message = torch.zeros(2, dtype=torch.float64)  # directive index, deadline (0: none)
        if rank == 0:
            directive, deadline = ray.get(runner.on_step.remote(metrics))
            message[0], message[1] = DIRECTIVES.index(directive), deadline
        dist.broadcast(message, src=0)
        return DIRECTIVES[int(message[0])], (float(message[1]) or None)

    return control


def run_with_ray_train(spec_mapping: dict, world_size: int, storage_path: str, name: str,
                       max_steps: int | None = None, metrics_path: str | None = None,
                       cpus_per_worker: float = 0.5, label_selectors: list[dict] | None = None,
                       describe_dir: str | None = None, runner=None, assignment: list[str] | None = None,
                       extra_resources: dict | None = None, job_id: str | None = None, home: str | None = None):
    """Run a job's training as a Ray Train TorchTrainer on the connected Ray cluster; returns the Result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    Path(storage_path).mkdir(parents=True, exist_ok=True)
    use_gpu = spec_mapping["resources"]["accelerator"]["type"].lower() != "cpu"
    scaling = ScalingConfig(
        num_workers=world_size, use_gpu=use_gpu,
        resources_per_worker={**({} if use_gpu else {"CPU": cpus_per_worker}), **(extra_resources or {})} or None,
        label_selector=label_selectors,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec_mapping, "max_steps": max_steps, "metrics_path": metrics_path, "threads": 1,
                           "describe_dir": describe_dir, "runner": runner, "assignment": assignment,
                           "job_id": job_id, "home": home},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=RunConfig(name=name, storage_path=storage_path, failure_config=FailureConfig(max_failures=0)),
    )
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")
    return trainer.fit()
