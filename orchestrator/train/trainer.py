"""The distributed training loop of one rank: DeepSpeed pipeline engine, steps, metrics, state.

Launcher-agnostic: Ray Train workers (``ray_worker``), ``torchrun``/``deepspeed`` processes
(``standalone``) and tests all construct a ``Trainer`` after torch.distributed is initialised and
hand it a ``report`` callable that receives each step's metrics.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.distributed as dist

from orchestrator.plan.planner import Plan
from orchestrator.spec.schema import JobSpec, ShardData, SyntheticData
from orchestrator.train.data import MarkovSource, ShardSource, fetch_shards, micro_batches
from orchestrator.train.pipeline import build_engine
from orchestrator.train.progress import Progress, Schedule, StepShape

if TYPE_CHECKING:
    from orchestrator.checkpoint.store import CheckpointStore
    from orchestrator.clock import Clock

Report = Callable[[dict], None]
Control = Callable[[dict], "tuple[str, float | None]"]  # (directive, checkpoint deadline)
from orchestrator.control.directives import CHECKPOINT_STOP, CONTINUE, DIRECTIVES, STOP  # noqa: E402,F401


def make_source(spec: JobSpec, local_dir: str | None = None):
    """The job's data source; shard data must already be local (the launcher fetches s3:// URIs)."""
    data = spec.data
    if isinstance(data, SyntheticData):
        return MarkovSource(spec.model.vocab_size, data.seed, data.branching, data.concentration)
    path = local_dir or data.path
    if isinstance(data, ShardData) and path.startswith("s3://"):
        from orchestrator.state.store import orch_home

        path = str(fetch_shards(path, orch_home() / "data-cache"))
    return ShardSource(path, data.dtype, spec.model.vocab_size)


@dataclass
class CheckpointSetup:
    """Where a trainer keeps its checkpoints and the clock its interval policy reads."""

    store: "CheckpointStore"
    clock: "Clock"


def _all_ranks_agree(ok: bool) -> bool:
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _layer_name(func) -> str:
    """Planner-style names of a pipeline stage's layers (``embed``, ``block.3``, ``head+mtp``)."""
    from orchestrator.train.model import BlockLayer, EmbeddingLayer, OutputLayer

    if isinstance(func, BlockLayer):
        return f"block.{func.block.index}"
    if isinstance(func, EmbeddingLayer):
        return "embed"
    if isinstance(func, OutputLayer):
        return "head+mtp" if func.mtp else "head"
    return "mtp_embed (tied)"


class Trainer:
    def __init__(self, spec: JobSpec, plan: Plan, report: Report | None = None, data_dir: str | None = None,
                 checkpoints: "CheckpointSetup | None" = None):
        self.spec, self.plan = spec, plan
        self.report = report or (lambda metrics: None)
        self.schedule = Schedule(spec, plan.mesh.data)
        self.progress = Progress()
        self.source = make_source(spec, data_dir)
        first = self.schedule.next_step(self.progress)
        self.engine, self.module, self.placement = build_engine(spec, plan, first.global_batch)
        self.rank = dist.get_rank()
        self.dp_group = self.engine.grid.get_data_parallel_group()
        self.stopped_by: str | None = None
        self.emergency: dict | None = None
        self.checkpointer, self.policy, self.resumed_from = None, None, None
        self.restore_s = 0.0
        if checkpoints is not None:
            started = time.perf_counter()
            self._setup_checkpoints(checkpoints)
            self.restore_s = time.perf_counter() - started
        # when this worker was ready to step (engine built, checkpoint loaded): the recovery benchmark
        # splits a restart into start-up, restore and first-step warm-up with it
        self.ready_at = time.time()
        self.first_step_reported = False

    # ------------------------------------------------------------------ checkpoints

    def _setup_checkpoints(self, setup: "CheckpointSetup") -> None:
        from orchestrator.checkpoint.policy import IntervalPolicy
        from orchestrator.checkpoint.session import RankCheckpointer

        mesh = self.plan.mesh
        layout = {"pipeline": mesh.pipeline, "data": mesh.data, "expert": mesh.expert, "tensor": mesh.tensor,
                  "world_size": mesh.world_size}
        retention = self.spec.checkpoint.retention
        self.checkpointer = RankCheckpointer(setup.store, self.rank, mesh.world_size, layout,
                                             retention.keep_last, retention.keep_every)
        self.policy = IntervalPolicy(self.spec, setup.clock)
        found = self.checkpointer.load_latest(_all_ranks_agree)
        if found is not None:
            manifest, state = found
            self.load_state_dict(state)
            self.resumed_from = manifest.step
            self.policy.resume(manifest.step, manifest.progress.get("checkpoint_cost"))
            self.checkpointer.last_committed = manifest.step

    def _checkpoint_progress(self) -> tuple[float, dict]:
        # the policy's measured save cost travels with the checkpoint to the next attempt
        return self.progress.tokens, {**self.progress.as_dict(), "checkpoint_cost": self.policy.measured()}

    def _maybe_checkpoint(self, metrics: dict) -> None:
        if self.checkpointer is None:
            return
        step = self.progress.step
        stall = 0.0
        if self.finished():
            self.on_checkpoint_request()
        elif self.policy.due(step):
            tokens, progress = self._checkpoint_progress()
            stall = self.checkpointer.save_async(step, self.state_dict(), tokens, progress)
            self.policy.saved(step, stall, self.checkpointer.last_duration_s)
        metrics["checkpoint_stall_s"] = stall
        metrics["checkpoint_step"] = self.checkpointer.last_committed

    # ------------------------------------------------------------------ steps

    def finished(self) -> bool:
        return self.schedule.finished(self.progress)

    def _data_iterator(self, shape: StepShape):
        engine = self.engine
        if not (engine.is_first_stage() or engine.is_last_stage()):
            return None
        batches = micro_batches(self.source, self.progress.data_position, shape.global_batch, self.plan.mesh.data,
                                self.placement.data_rank, self.spec.parallelism.micro_batch_size, shape.sample_len)
        return iter([(b, b) for b in batches])

    def train_step(self) -> dict:
        shape = self.schedule.next_step(self.progress)
        if shape.global_batch != self.engine.train_batch_size():
            self.engine.set_train_batch_size(shape.global_batch)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = shape.lr
        started = time.perf_counter()
        total_loss = self.engine.train_batch(data_iter=self._data_iterator(shape))
        imbalance = self._update_balance()
        elapsed = time.perf_counter() - started
        parts = {k: float(v) for k, v in (self.engine.agg_additional_losses or {}).items()}
        self.schedule.advance(self.progress, shape)
        tokens = shape.global_batch * shape.seq_len
        metrics = {
            "step": self.progress.step,
            "phase": shape.phase,
            "loss": parts.get("lm_loss", float(total_loss)),
            "total_loss": float(total_loss),
            "mtp_loss": parts.get("mtp_loss", 0.0),
            "balance_loss": parts.get("balance_loss", 0.0),
            "lr": shape.lr,
            "global_batch": shape.global_batch,
            "seq_len": shape.seq_len,
            "tokens": self.progress.tokens,
            "step_tokens": tokens,
            "step_time_s": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
            "expert_imbalance": imbalance,
            "data_position": self.progress.data_position,
            "wall_time": time.time(),  # when the step ended: the ledger's clock for it
        }
        if not self.first_step_reported:  # an attempt's first step says how it started
            self.first_step_reported = True
            metrics.update(ready_at=self.ready_at, restore_s=self.restore_s, resumed_from=self.resumed_from)
        self._maybe_checkpoint(metrics)
        self.report(metrics)
        return metrics

    def _update_balance(self) -> float:
        """Move every local MoE layer's balance bias; the worst max/mean load across the whole model."""
        worst = max((layer.update_balance(self.dp_group) for layer in self.module.moe_layers()), default=1.0)
        value = torch.tensor([worst], dtype=torch.float64)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value)

    def train(self, max_steps: int | None = None, control: Control | None = None) -> list[dict]:
        """Train to the end of the last phase (or ``max_steps``). After each step ``control`` (the
        same on every rank) may answer ``stop`` or ``checkpoint_stop`` with a deadline; every rank
        then stops at that same step, after saving if asked (the result is kept in ``emergency``)."""
        history = []
        while not self.finished() and (max_steps is None or len(history) < max_steps):
            metrics = self.train_step()
            history.append(metrics)
            directive, deadline = control(metrics) if control else (CONTINUE, None)
            if directive == CHECKPOINT_STOP:
                committed = self.on_checkpoint_request(deadline)
                self.emergency = {"step": self.progress.step, "committed": committed, "deadline": deadline}
            if directive in (STOP, CHECKPOINT_STOP):
                self.stopped_by = directive
                break
        return history

    def on_checkpoint_request(self, deadline: float | None = None) -> bool:
        """Save synchronously and wait for the commit (before stopping or at the end); returns whether
        the step committed (before ``deadline``, if given). Without a checkpoint store: False."""
        if self.checkpointer is None:
            return False
        if self.checkpointer.last_committed == self.progress.step:
            return True
        tokens, progress = self._checkpoint_progress()
        committed = self.checkpointer.save_sync(self.progress.step, self.state_dict(), tokens, progress, deadline)
        if committed:
            self.checkpointer.last_committed = self.progress.step
            self.policy.saved(self.progress.step, 0.0, self.checkpointer.last_duration_s)
        return committed

    def describe(self) -> dict:
        """What this rank holds: its layers, its routed experts and its parameter count."""
        experts = sorted({layer.ep_rank * layer.num_local_experts + i
                          for layer in self.module.moe_layers() for i in range(layer.num_local_experts)})
        local = self.module.forward_funcs
        return {
            "rank": self.rank,
            "placement": self.placement.as_dict(),
            "layers": [_layer_name(f) for f in local],
            "experts": experts,
            "params": sum(p.numel() for p in self.module.parameters()),
            "expert_params": sum(p.numel() for p in self.module.parameters() if getattr(p, "allreduce", True) is False),
        }

    # ------------------------------------------------------------------ state (per rank, never gathered)

    def state_dict(self) -> dict:
        """This rank's whole training state: its stage's layers and expert shard (balance biases
        included, as buffers), its ZeRO-1 optimizer partition, the schedule position, the data
        position and the RNG states."""
        return {
            "rank": self.rank,
            "placement": self.placement.as_dict(),
            "progress": self.progress.as_dict(),
            "engine": {"global_steps": self.engine.global_steps, "global_samples": self.engine.global_samples},
            "module": self.module.state_dict(),
            "optimizer": self.engine.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["placement"] != self.placement.as_dict():
            raise ValueError(f"state of {state['placement']} cannot load into rank {self.placement.as_dict()}")
        self.module.load_state_dict(state["module"])
        # ZeRO-1 loads from a list indexed by data-parallel rank: this rank's own partition
        self.engine.optimizer.load_state_dict([state["optimizer"]] * self.plan.mesh.data,
                                              load_optimizer_states=True, load_from_fp32_weights=True)
        self.progress = Progress.from_dict(state["progress"])
        self.engine.global_steps = state["engine"]["global_steps"]
        self.engine.global_samples = state["engine"]["global_samples"]
        if self.progress.step and self.schedule.next_step(self.progress).global_batch != self.engine.train_batch_size():
            self.engine.set_train_batch_size(self.schedule.next_step(self.progress).global_batch)
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
