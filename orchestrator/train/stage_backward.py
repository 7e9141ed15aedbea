"""One backward pass per micro-batch on a pipeline stage that sends several tensors.

DeepSpeed 0.19.8's ``PipelineEngine._exec_backward_pass`` (``deepspeed/runtime/pipe/engine.py``,
line 853) calls ``out.backward(gradient=grad, retain_graph=...)`` once per floating output of
a stage. orch's stages send ``(hidden, aux_loss, tokens)`` (``train/model.py``), and both floating
tensors depend on every block of the stage (the balance loss through each MoE gate), so:

- the stage's whole backward graph ran twice per micro-batch (once per output), and
- with activation checkpointing, DeepSpeed's reentrant ``CheckpointFunction.backward`` ran twice on
  the same context and failed the second time: it clears ``ctx.deepspeed_saved_tensors`` after the
  first (``runtime/activation_checkpointing/checkpointing.py`` line 767) and iterates it at line 700
  (``TypeError: 'NoneType' object is not iterable``). Every non-last stage of a pipeline with
  ``activation_checkpointing: true`` (the V3 job) failed its first backward; the equivalence test
  (tests/integration/test_equivalence.py, checkpointing on) found it.

``torch.autograd.backward`` over all the outputs at once traverses the graph once with every
output's gradient, which is what the separate calls add up to (the backward is linear in them).
The last stage (a loss) and tensor-parallel partitioned activations keep DeepSpeed's own code.
"""

from __future__ import annotations

import torch
from deepspeed.runtime.pipe import schedule
from deepspeed.runtime.pipe.engine import PipelineEngine


def install(engine: PipelineEngine) -> None:
    """Make this engine run ``backward_pass`` for its schedule's ``BackwardPass`` instructions
    (``PipelineEngine._exec_schedule`` looks each instruction up in ``self._INSTRUCTION_MAP``)."""
    engine._INSTRUCTION_MAP = {**engine._INSTRUCTION_MAP, schedule.BackwardPass: backward_pass}


def backward_pass(self: PipelineEngine, buffer_id: int) -> None:
    """DeepSpeed's ``_exec_backward_pass`` for a non-last stage, with one joint backward call."""
    if self.is_last_stage() or self.is_pipe_partitioned or self.is_grad_partitioned:
        PipelineEngine._exec_backward_pass(self, buffer_id)
        return
    outputs = self.pipe_buffers["outputs"][buffer_id]
    if self.using_bf16_optimizer:
        self.optimizer.clear_lp_grads()  # as DeepSpeed does: optimizer.backward() is not called here
    self._running_engine_backward = True  # DeepSpeed's post-backward hook checks it
    try:
        if isinstance(outputs, tuple):
            tensors = [t for t in outputs if t.is_floating_point()]
            torch.autograd.backward(tensors, grad_tensors=list(self.grad_layer))
        else:
            outputs.backward(gradient=self.grad_layer)
    finally:
        self._running_engine_backward = False
    if self.using_bf16_optimizer and not self._config.bfloat16_config.immediate_grad_update:
        self.optimizer.update_hp_grads(clear_lp_grads=False)
    self.pipe_buffers["output_tensors"][buffer_id] = None  # free the forward's outputs
    self.pipe_buffers["outputs"][buffer_id] = None
