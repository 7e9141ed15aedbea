"""The same training in one process: all layers and all experts local, plain torch AdamW.

It takes exactly the steps the distributed trainer takes (same ``Schedule``, same data samples,
same initial weights by construction), so comparing the two checks that pipeline, expert and
ZeRO-1 data parallelism change nothing but where the work runs.
"""

from __future__ import annotations

import torch

from orchestrator.spec.schema import JobSpec
from orchestrator.train.feed import make_source
from orchestrator.train.model import LocalModel
from orchestrator.train.progress import Progress, Schedule


class ReferenceTrainer:
    def __init__(self, spec: JobSpec, data_parallel: int = 1, balance_speed: float | None = None):
        self.spec, self.balance_speed = spec, balance_speed
        balance = spec.training.balance
        if balance_speed is not None:
            balance = balance.model_copy(update={"bias_update_speed": balance_speed})
        self.model = LocalModel(spec.model, balance, spec.training.seed, spec.training.mtp_loss_weight)
        opt = spec.training.optimizer
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        other = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": other, "weight_decay": 0.0}],
            lr=spec.training.lr_schedule.peak,
            betas=tuple(opt.betas),
            eps=opt.eps,
        )
        self.schedule = Schedule(spec, data_parallel)
        self.progress = Progress()
        self.source = make_source(spec)
        self.micro_batch = spec.parallelism.micro_batch_size

    def train_step(self) -> dict:
        shape = self.schedule.next_step(self.progress)
        for group in self.optimizer.param_groups:
            group["lr"] = shape.lr
        self.model.loss_fn.mtp_weight = shape.mtp_weight
        batch = self.source.windows(self.progress.data_position, shape.global_batch, shape.sample_len)
        self.optimizer.zero_grad()
        chunks = batch.split(self.micro_batch)
        lm = 0.0
        for chunk in chunks:  # gradient accumulation over micro-batches, as the pipeline does
            loss = self.model(chunk) / len(chunks)
            loss.backward()
            lm += float(self.model.loss_fn.last.values["lm_loss"]) / len(chunks)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.training.optimizer.grad_clip)
        self.optimizer.step()
        speed = self.schedule.bias_update_speed(self.progress) if self.balance_speed is None else self.balance_speed
        imbalance = max((layer.update_balance(None, speed) for layer in self.model.moe_layers()), default=1.0)
        self.schedule.advance(self.progress, shape)
        return {
            "step": self.progress.step,
            "loss": lm,
            "expert_imbalance": imbalance,
            "global_batch": shape.global_batch,
        }

    def train(self, steps: int) -> list[dict]:
        return [self.train_step() for _ in range(steps) if not self.schedule.finished(self.progress)]
