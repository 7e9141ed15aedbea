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

from orchestrator.checkpoint.decision import CollectiveSchedule
from orchestrator.checkpoint.memory import MEMORY, OBJECT_STORE, ShardCopies
from orchestrator.checkpoint.objects import StorageError
from orchestrator.checkpoint.policy import IntervalPolicy
from orchestrator.checkpoint.session import RankCheckpointer
from orchestrator.checkpoint.store import CheckpointError
from orchestrator.lifecycle import Directive
from orchestrator.plan.planner import Plan
from orchestrator.spec.schema import JobSpec
from orchestrator.train import collectives
from orchestrator.train.feed import DataFeed
from orchestrator.train.gc_clock import PROCESS_CLOCK
from orchestrator.train.model import BlockLayer, EmbeddingLayer, OutputLayer
from orchestrator.train.pipeline import build_engine
from orchestrator.train.progress import Progress, Schedule

if TYPE_CHECKING:
    from orchestrator.checkpoint.store import CheckpointStore
    from orchestrator.clock import Clock

Report = Callable[[dict], None]
Control = Callable[[dict], "tuple[str, float | None]"]  # (directive, checkpoint deadline)


@dataclass
class CheckpointSetup:
    """Where a trainer keeps its checkpoints, the clock its interval policy reads, what the job's
    gang has seen so far (infrastructure interruptions, seconds held: ``ledger/exposure.py``), which
    ``auto`` combines with the spec's interruption rates, and the optional in-memory tier (copies of
    each shard in peer memory, read first on resume)."""

    store: "CheckpointStore"
    clock: "Clock"
    interruptions: "tuple[int, float] | None" = None
    copies: ShardCopies | None = None


def _reduce_max(values: list[float]) -> list[float]:
    """Element-wise MAX of ``values`` over every rank (the checkpoint decisions' one collective), on the
    default group's device (``collectives``)."""
    return collectives.all_reduce(torch.tensor(values, dtype=torch.float64), "max").tolist()


def _layer_name(func) -> str:
    """Planner-style names of a pipeline stage's layers (``embed``, ``block.3``, ``head+mtp``)."""
    if isinstance(func, BlockLayer):
        return f"block.{func.block.index}"
    if isinstance(func, EmbeddingLayer):
        return "embed"
    if isinstance(func, OutputLayer):
        return "head+mtp" if func.mtp else "head"
    return "mtp_embed (tied)"


class Trainer:
    def __init__(
        self,
        spec: JobSpec,
        plan: Plan,
        report: Report | None = None,
        data_dir: str | None = None,
        checkpoints: "CheckpointSetup | None" = None,
        on_phase: Callable[[str], None] | None = None,
    ):
        """``on_phase(name)`` is called as each start-up phase begins (``data``, ``engine build``,
        ``checkpoint restore``), so a cold start can be watched."""
        self.spec, self.plan = spec, plan
        self.report = report or (lambda metrics: None)
        on_phase = on_phase or (lambda name: None)
        self.schedule = Schedule(spec, plan.mesh.data)
        self.progress = Progress()
        first = self.schedule.next_step(self.progress)
        on_phase("engine build")
        self.engine, self.module, self.placement = build_engine(spec, plan, first.global_batch)
        on_phase("data")
        # data by role: only the first stage reads, each replica its own slice (orchestrator.train.feed)
        self.feed = DataFeed(
            spec, self.placement.stage, plan.mesh.pipeline, self.placement.data_rank, plan.mesh.data, data_dir
        )
        self.rank = collectives.rank()
        self.dp_group = self.engine.grid.get_data_parallel_group()
        self.stopped_by: str | None = None
        self.emergency: dict | None = None
        self.checkpointer, self.policy, self.resumed_from = None, None, None
        self.restore_s = 0.0
        if checkpoints is not None:
            on_phase("checkpoint restore")
            started = time.perf_counter()
            self._setup_checkpoints(checkpoints)
            self.restore_s = time.perf_counter() - started
        # when this worker was ready to step (engine built, checkpoint loaded): the recovery benchmark
        # splits a restart into start-up, restore and first-step warm-up with it
        self.ready_at = time.time()
        self.first_step_reported = False
        PROCESS_CLOCK.start()

    # ------------------------------------------------------------------ checkpoints

    def _setup_checkpoints(self, setup: "CheckpointSetup") -> None:
        mesh = self.plan.mesh
        layout = {
            "pipeline": mesh.pipeline,
            "data": mesh.data,
            "expert": mesh.expert,
            "tensor": mesh.tensor,
            "world_size": mesh.world_size,
        }
        retention = self.spec.checkpoint.retention
        # rank 0 registers this attempt on the store; every rank writes under that number
        attempt = int(_reduce_max([float(setup.store.register_attempt()) if self.rank == 0 else 0.0])[0])
        self.checkpointer = RankCheckpointer(
            setup.store,
            self.rank,
            mesh.world_size,
            layout,
            retention.keep_last,
            retention.keep_every,
            attempt=attempt,
            copies=setup.copies,
        )
        self.checkpointer.guard(self.engine.optimizer)
        self.policy = IntervalPolicy(self.spec, setup.clock)
        if setup.interruptions is not None:
            self.policy.observe_interruptions(*setup.interruptions)
        self.saves = CollectiveSchedule(self.policy, self.rank, _reduce_max)
        found = self.checkpointer.load_latest(_reduce_max)
        if found is not None:
            manifest, state = found
            self.load_state_dict(state)
            self.resumed_from = manifest.step
            self.policy.resume(manifest.step, manifest.progress.get("checkpoint_cost"))
            if manifest.durable:
                self.checkpointer.last_committed = manifest.step
            else:  # resumed from peer memory: the step is restorable, not yet in object storage
                self.checkpointer.last_in_memory = manifest.step

    def _restore_sources(self) -> list[str] | None:
        """Where each rank's resumed shard came from (``memory`` or ``object store``), by rank: one
        collective at the first step of a resumed attempt (every rank takes the same branch)."""
        if self.checkpointer is None or self.resumed_from is None:
            return None
        sources = (MEMORY, OBJECT_STORE)
        mine = [0.0] * self.plan.mesh.world_size
        mine[self.rank] = float(sources.index(self.checkpointer.restored_from) + 1)
        return [sources[int(code) - 1] for code in _reduce_max(mine)]

    def _checkpoint_progress(self) -> tuple[float, dict]:
        # the policy's measured save cost travels with the checkpoint to the next attempt
        return self.progress.tokens, {**self.progress.as_dict(), "checkpoint_cost": self.policy.measured()}

    def _maybe_checkpoint(self, metrics: dict) -> None:
        """Every rank, every step: the collective decision (rank 0's policy, shared by an
        all-reduce), then the save it decided, on every rank at the same step."""
        if self.checkpointer is None:
            return
        ckpt = self.checkpointer
        if self.finished():
            self.on_checkpoint_request()
        else:
            self.saves.measured(ckpt.last_stall_s, ckpt.last_duration_s)
            decision = self.saves.decide(self.progress.step)
            if decision is not None:
                tokens, progress = self._checkpoint_progress()
                ckpt.save_async(decision.step, self.state_dict(), tokens, progress)
        metrics["checkpoint_stall_s"] = ckpt.take_stall()
        metrics["checkpoint_step"] = ckpt.restorable  # what a restart resumes from: the ledger's cut
        metrics["checkpoint_durable_step"] = ckpt.last_committed
        metrics["checkpoint_attempt"] = ckpt.attempt

    # ------------------------------------------------------------------ steps

    def finished(self) -> bool:
        return self.schedule.finished(self.progress)

    def train_step(self) -> dict:
        shape = self.schedule.next_step(self.progress)
        if shape.global_batch != self.engine.train_batch_size():
            self.engine.set_train_batch_size(shape.global_batch)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = shape.lr
        self.module._loss.mtp_weight = shape.mtp_weight
        started, gc_before = time.perf_counter(), PROCESS_CLOCK.total_s
        total_loss = self.engine.train_batch(data_iter=self.feed.iterator(self.schedule, self.progress))
        imbalance = self._update_balance()  # before advance: the speed in force for the tokens just trained
        elapsed = time.perf_counter() - started
        gc_s = PROCESS_CLOCK.total_s - gc_before
        parts = {k: float(v) for k, v in (self.engine.agg_additional_losses or {}).items()}
        self.schedule.advance(self.progress, shape)
        tokens = shape.global_batch * shape.seq_len
        metrics = {
            "step": self.progress.step,
            "phase": shape.phase,
            "loss": parts.get("lm_loss", float(total_loss)),
            "total_loss": float(total_loss),
            "mtp_loss": parts.get("mtp_loss", 0.0),
            "mtp_weight": shape.mtp_weight,
            "balance_loss": parts.get("balance_loss", 0.0),
            "lr": shape.lr,
            "global_batch": shape.global_batch,
            "seq_len": shape.seq_len,
            "tokens": self.progress.tokens,
            "step_tokens": tokens,
            "step_time_s": elapsed,
            "gc_s": gc_s,  # of which in Python's garbage collector (train/gc_clock.py)
            "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
            "expert_imbalance": imbalance,
            "data_position": self.progress.data_position,
            "wall_time": time.time(),  # when the step ended: the ledger's clock for it
        }
        if not self.first_step_reported:  # an attempt's first step says how it started
            self.first_step_reported = True
            metrics.update(
                ready_at=self.ready_at,
                restore_s=self.restore_s,
                resumed_from=self.resumed_from,
                restored_from=self._restore_sources(),
                torch_threads=torch.get_num_threads(),
            )  # per process: the launchers must agree
            if self.policy is not None:  # the MTBF ``auto`` starts this attempt with (null: none expected)
                mtbf = self.policy.mtbf_s()
                metrics["checkpoint_mtbf_s"] = None if mtbf == float("inf") else mtbf
        self._maybe_checkpoint(metrics)
        self.report(metrics)
        return metrics

    def _update_balance(self) -> float:
        """Move every local MoE layer's balance bias; the worst max/mean load across the whole model."""
        speed = self.schedule.bias_update_speed(self.progress)
        worst = max((layer.update_balance(self.dp_group, speed) for layer in self.module.moe_layers()), default=1.0)
        return collectives.reduce_max(worst)

    def train(self, max_steps: int | None = None, control: Control | None = None) -> list[dict]:
        """Train to the end of the last phase (or ``max_steps``). After each step ``control`` (the
        same on every rank) may answer ``stop`` or ``checkpoint_stop`` with a deadline; every rank
        then stops at that same step, after saving if asked (the result is kept in ``emergency``)."""
        history = []
        ckpt = self.checkpointer
        if self.finished() and ckpt is not None and ckpt.last_committed != self.progress.step:
            # resumed at the last step from a checkpoint committed only in memory (its upload was lost
            # with the attempt before): commit it durably before the job can be reported done
            self.on_checkpoint_request()
        while not self.finished() and (max_steps is None or len(history) < max_steps):
            metrics = self.train_step()
            history.append(metrics)
            directive, deadline = control(metrics) if control else (Directive.CONTINUE, None)
            if directive == Directive.CHECKPOINT_STOP:
                committed = self.on_checkpoint_request(deadline)
                self.emergency = {"step": self.progress.step, "committed": committed, "deadline": deadline}
            if directive in (Directive.STOP, Directive.CHECKPOINT_STOP):
                self.stopped_by = directive
                break
        return history

    def on_checkpoint_request(self, deadline: float | None = None) -> bool:
        """Save synchronously and wait for the commit (before stopping, on a notice, or at the end);
        returns whether the step committed (before ``deadline``, if given: past it the save is
        abandoned and the previous checkpoint stands). Every rank calls it at the same step: the
        directive that asks for it is the same on every rank. Without a checkpoint store: False."""
        if self.checkpointer is None:
            return False
        ckpt, step = self.checkpointer, self.progress.step
        if ckpt.last_started == step:  # this step's save was begun on every rank (one decision): wait for it
            try:
                done = ckpt.wait(None if deadline is None else max(0.0, deadline - time.time()))
            except (CheckpointError, StorageError):
                if deadline is None:
                    raise
                return False
            # (only rank 0's writer sees the commit; the other ranks' answer is not reported)
            return done and (self.rank != 0 or ckpt.last_committed == step)
        if ckpt.last_committed == step:  # resumed from this step's durable checkpoint: set on every rank
            return True
        if deadline is not None and not self.checkpointer.save_fits(deadline, _max_across_ranks):
            return False  # it cannot commit in time: stop now rather than hold the nodes until the deadline
        tokens, progress = self._checkpoint_progress()
        committed = self.checkpointer.save_sync(self.progress.step, self.state_dict(), tokens, progress, deadline)
        if committed:
            self.checkpointer.last_committed = self.progress.step
            self.policy.saved(self.progress.step, None, self.checkpointer.last_duration_s)
        return committed

    def describe(self) -> dict:
        """What this rank holds: its layers, its routed experts and its parameter count."""
        experts = sorted(
            {
                layer.ep_rank * layer.num_local_experts + i
                for layer in self.module.moe_layers()
                for i in range(layer.num_local_experts)
            }
        )
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
            "optimizer": _optimizer_state(self.engine.optimizer),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["placement"] != self.placement.as_dict():
            raise ValueError(f"state of {state['placement']} cannot load into rank {self.placement.as_dict()}")
        self.module.load_state_dict(state["module"])
        # ZeRO-1 loads from a list indexed by data-parallel rank: this rank's own partition
        self.engine.optimizer.load_state_dict(
            [state["optimizer"]] * self.plan.mesh.data, load_optimizer_states=True, load_from_fp32_weights=True
        )
        self.progress = Progress.from_dict(state["progress"])
        self.engine.global_steps = state["engine"]["global_steps"]
        self.engine.global_samples = state["engine"]["global_samples"]
        # a checkpoint of the last step (the node went after the final commit) has no next step
        if (
            self.progress.step
            and not self.schedule.finished(self.progress)
            and self.schedule.next_step(self.progress).global_batch != self.engine.train_batch_size()
        ):
            self.engine.set_train_batch_size(self.schedule.next_step(self.progress).global_batch)
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])


# ZeRO's state_dict keys that are Python objects rather than data, and that loading does not need:
# the loss scaler object (a fresh one is kept; orch trains fp32/bf16/fp8 without dynamic loss
# scaling) and the parameter-slice map of universal checkpoints (rebuilt by the engine).
_OBJECT_KEYS = ("loss_scaler", "param_slice_mappings")


def _optimizer_state(optimizer) -> dict:
    """The optimizer's state as data only (the checkpoint codec stores no Python objects)."""
    state = optimizer.state_dict()
    return {k: v for k, v in state.items() if k not in _OBJECT_KEYS}


def _max_across_ranks(values: list[float]) -> list[float]:
    return [collectives.reduce_max(v) for v in values]
