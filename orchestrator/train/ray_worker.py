"""Training under Ray Train: one TorchTrainer worker per device, DeepSpeed inside each.

Ray Train owns the worker group (start, torch.distributed set-up over gloo or NCCL, failure
detection); orch owns what runs in it (``Trainer``) and where it runs (the plan's rank mapping,
given as one label selector per worker by the control plane).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import torch

from orchestrator.checkpoint.locate import open_job_checkpoints
from orchestrator.clock import SystemClock
from orchestrator.lifecycle import DIRECTIVES
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import validate_mapping
from orchestrator.train import collectives
from orchestrator.train.warm_control import started_warm
from orchestrator.train.warm_workers import attempt_started, prestart_for_next_attempt, worker_runtime_env

# Every step's metrics go to orch's own channel (rank 0 -> the job's metrics sink). Ray Train's
# report() is a barrier across all workers in Ray Train V2 (it syncs a checkpoint directory name
# through an actor even without a checkpoint), so orch calls it every N steps and at the end.
RAY_REPORT_EVERY = 25


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config``: spec (mapping), max_steps, metrics_path, threads."""
    import ray.train

    from orchestrator.train.trainer import Trainer

    started = time.time()
    torch.set_num_threads(int(config.get("threads", 1)))
    spec = validate_mapping(config["spec"], "job")
    plan = make_plan(spec)
    collectives.initialise()
    rank = collectives.rank()
    metrics_path = config.get("metrics_path")
    sink = open(metrics_path, "a") if metrics_path and rank == 0 else None

    every = int(config.get("ray_report_every", RAY_REPORT_EVERY))
    total_steps = plan.total_steps if config.get("max_steps") is None else min(plan.total_steps, config["max_steps"])

    def report(metrics: dict) -> None:
        if sink:
            record = {**metrics, "since_launch_s": time.time() - started, "wall_time": time.time(), "warm_ranks": warm}
            sink.write(json.dumps(record) + "\n")
            sink.flush()
        if metrics["step"] % every == 0 or metrics["step"] >= total_steps:
            ray.train.report(metrics)

    assignment = config.get("assignment")
    if assignment:
        check_node(plan, rank, assignment)
    warm_next = rank == 0 and bool(assignment) and spec.fault_tolerance.warm_restart
    cleared = start_thread(attempt_started, assignment) if warm_next else None  # the gang took what waited
    checkpoints = None
    if config.get("job_id"):
        from orchestrator.train.trainer import CheckpointSetup

        seen = config.get("interruptions")  # (interruptions, seconds held) of the job so far, from its runner
        checkpoints = CheckpointSetup(
            open_job_checkpoints(
                spec.checkpoint, config["job_id"], Path(config["home"]) if config.get("home") else None
            ),
            SystemClock(),
            tuple(seen) if seen else None,
            peer_copies(spec, config["job_id"], assignment),
        )
    runner = config.get("runner")
    on_phase = None
    warm = warm_ranks(config.get("attempt_started"))
    if runner is not None and rank == 0:  # each phase in order: the runner is a threaded actor
        ray.get(
            runner.startup.remote(
                "workers up",
                f"torch.distributed over {collectives.backend()}, "
                f"{time.time() - started:.1f} s in this worker, {warm} of "
                f"{collectives.world_size()} ranks in warm processes",
            )
        )
        on_phase = lambda name: ray.get(runner.startup.remote(name))  # noqa: E731
    trainer = Trainer(spec, plan, report, checkpoints=checkpoints, on_phase=on_phase)
    if config.get("describe_dir"):
        Path(config["describe_dir"], f"rank{rank}.json").write_text(json.dumps(trainer.describe()))
    if on_phase is not None:
        on_phase("first step")
    control = make_control(runner, rank) if runner is not None else None
    if cleared is not None:
        per_node = plan.mesh.devices_per_node
        control = after_first_step(control, lambda: start_thread(prestart_after, cleared, assignment, per_node))
    trainer.train(config.get("max_steps"), control)
    if trainer.checkpointer is not None and (trainer.emergency is None or trainer.emergency["committed"]):
        trainer.checkpointer.wait()  # (an emergency save abandoned at its deadline is not waited for)
    if runner is not None and rank == 0 and trainer.emergency is not None:
        ray.get(runner.checkpoint_result.remote(trainer.emergency))
    if checkpoints is not None and checkpoints.copies is not None and rank == 0 and trainer.finished():
        checkpoints.copies.forget()  # the job is over: no restart will want its copies


def warm_ranks(attempt_started: float | None) -> int:
    """How many ranks run in a process that existed before this attempt began (a warm worker,
    ``warm_workers.py``) rather than one Ray started for it: one all-reduce, every rank."""
    warm = started_warm(attempt_started)
    return int(collectives.all_reduce(torch.tensor([float(warm)]), "sum")[0])


def after_first_step(control, start):
    """``control`` that first calls ``start`` once the attempt's first step is done: the next attempt's
    warm workers import torch and DeepSpeed as they start, and on a node's host cores that work would
    otherwise share them with the engine build and first step of this (possibly restarted) attempt,
    whose start is what a restart waits for (bench_recovery: the warm first step took 7.3 s against
    0.5 s cold when they were asked before it). Nothing needs them before the next failure."""
    started = False

    def control_after(metrics: dict) -> tuple[str, float | None]:
        nonlocal started
        if not started:
            started = True
            start()
        return control(metrics) if control is not None else (DIRECTIVES[0], None)

    return control_after


def start_thread(target, *args) -> threading.Thread:
    """``target(*args)`` off the training thread (the warm workers' bookkeeping: GCS and raylet calls)."""
    thread = threading.Thread(target=target, args=args, name="warm-workers", daemon=True)
    thread.start()
    return thread


def prestart_after(cleared: threading.Thread, assignment: list[str], per_node: int) -> None:
    """Warm workers for the next attempt (``warm_workers.py``), recorded after this attempt's clearing
    of its nodes' records is done (it began before the engine build; one thread each so neither waits
    on the training thread)."""
    cleared.join()
    prestart_for_next_attempt(assignment, per_node)


def peer_copies(spec, job_id: str, assignment: list[str] | None):
    """The in-memory checkpoint tier (``train/peer_memory.py``) for a job placed on named nodes:
    this worker's node and the gang's assignment say where its copies go. None without a placement
    (a plain Ray Train run) or with ``fault_tolerance.warm_restart: false``."""
    import ray

    from orchestrator.train.peer_memory import PeerCopies

    node = ray.get_runtime_context().get_node_labels().get("orch-node")
    if not assignment or node is None or not spec.fault_tolerance.warm_restart:
        return None
    return PeerCopies(job_id, node, assignment)


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

    def control(metrics: dict) -> tuple[str, float | None]:
        message = torch.zeros(2, dtype=torch.float64)  # directive index, deadline (0: none)
        if rank == 0:
            directive, deadline = ray.get(runner.on_step.remote(metrics))
            message[0], message[1] = DIRECTIVES.index(directive), deadline
        collectives.broadcast(message, src=0)  # on the group's device (NCCL: CUDA)
        return DIRECTIVES[int(message[0])], (float(message[1]) or None)

    return control


def run_with_ray_train(
    spec_mapping: dict,
    world_size: int,
    storage_path: str,
    name: str,
    max_steps: int | None = None,
    metrics_path: str | None = None,
    cpus_per_worker: float = 0.5,
    label_selectors: list[dict] | None = None,
    describe_dir: str | None = None,
    runner=None,
    assignment: list[str] | None = None,
    extra_resources: dict | None = None,
    job_id: str | None = None,
    home: str | None = None,
    interruptions: tuple[int, float] | None = None,
    warm_processes: bool | None = None,
):
    """Run a job's training as a Ray Train TorchTrainer on the connected Ray cluster; returns the Result.
    ``interruptions``: what the job's gang has seen so far, for the ``auto`` checkpoint interval.
    ``warm_processes``: whether the workers run the warm hook and the controller records its runtime
    environment (default: a job's run with ``fault_tolerance.warm_restart``)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from orchestrator.train.controller_env import RecordControllerEnv

    Path(storage_path).mkdir(parents=True, exist_ok=True)
    use_gpu = spec_mapping["resources"]["accelerator"]["type"].lower() != "cpu"
    # warm restarts: the workers run warm_workers.preload as they start (prestarted ones already did)
    warm = warm_processes
    if warm is None:
        warm = job_id is not None and spec_mapping.get("fault_tolerance", {}).get("warm_restart", True)
    scaling = ScalingConfig(
        num_workers=world_size,
        use_gpu=use_gpu,
        resources_per_worker={**({} if use_gpu else {"CPU": cpus_per_worker}), **(extra_resources or {})} or None,
        label_selector=label_selectors,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": spec_mapping,
            "max_steps": max_steps,
            "metrics_path": metrics_path,
            "threads": 1,
            "describe_dir": describe_dir,
            "runner": runner,
            "assignment": assignment,
            "job_id": job_id,
            "home": home,
            "interruptions": interruptions,
            "attempt_started": time.time(),
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=0),
            worker_runtime_env=worker_runtime_env() if warm else {},
            # the Train controller records its runtime environment: warm control processes (warm_control.py)
            callbacks=[RecordControllerEnv()] if warm else [],
        ),
    )
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")
    return trainer.fit()
