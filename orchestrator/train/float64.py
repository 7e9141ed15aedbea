"""Float64 end to end through DeepSpeed's ZeRO-1 optimizer, so a float64 run is exact.

orch verifies its parallel runtime by training in float64 and comparing with one process
(tests/integration/test_equivalence.py): with every operation in float64 only summation order
differs, so a difference above 1e-9 is a bug. DeepSpeed 0.19.8 has no float64 mode for ZeRO-1,
and three of its defaults silently break that comparison when the parameters are float64
(``deepspeed/runtime/zero/stage_1_and_2.py`` of 0.19.8 unless said otherwise):

1. Master weights are float32. ``weights_partition = ... .to(dtype=self.master_weights_and_grads_dtype)``
   (``DeepSpeedZeroOptimizer.__init__``, line 560) with ``ZeROOptimizer._configure_master_weights``
   (``runtime/base_optimizer.py`` line 484) returning float16, bfloat16 or else float32; no setting
   asks for float64 (``runtime/config.py`` ``DtypeEnum`` lists fp16, fp32, int8 and bf16 only).
2. Gradients accumulate in float32 in a side buffer. The engine passes ``grad_accum_dtype`` =
   its model dtype, float32 when neither fp16 nor bf16 is on (``runtime/engine.py``
   ``get_data_types``, line 1799); float64 parameters then differ from it, so
   ``use_grad_accum_attribute`` is set (line 402) and every gradient hook moves ``param.grad``
   into a float32 ``param.grad_accum`` and sets ``param.grad = None`` (line 1234).
3. That hides the gradient of a weight tied across pipeline stages:
   ``PipelineEngine._exec_reduce_tied_grads`` (``runtime/pipe/engine.py`` line 283) sums
   ``weight.grad`` over the tie group and skips it when it is None, which it now always is. Each
   stage's copy of orch's embedding (stage 0 and the MTP modules on the last stage) is then
   updated with its own stage's gradient only, and the copies drift apart.
   Gradients are also reduced in float32 (``communication_data_type`` defaults to fp32 unless
   fp16/bf16, ``runtime/engine.py`` line 1719; ``get_communication_data_type`` in
   ``runtime/config.py`` accepts fp16, bf16 and fp32 only).

``keep_float64`` turns the optimizer DeepSpeed built into the one it builds when the parameter
and accumulation dtypes agree (its float32 path, e.g. ``precision: fp32``), in float64: the
gradient stays in ``param.grad`` (so the tied gradients are reduced), accumulation, reduction
and master weights are float64. It runs right after ``deepspeed.initialize``, before the first
step (the optimizer holds no state yet). The production precisions never take this path:
bf16 runs use ``BF16_Optimizer`` (fp32 masters, tied gradients in ``_hp_grad``) and fp32 runs
already have parameter dtype = accumulation dtype.
"""

from __future__ import annotations

import torch

from orchestrator.errors import OrchError
from orchestrator.train import collectives


class Float64SetupError(OrchError):
    """DeepSpeed built an optimizer that ``keep_float64`` does not know how to make exact."""


def needs_float64(module: torch.nn.Module) -> bool:
    """Whether the model holds float64 parameters (the equivalence test's precision)."""
    return any(p.dtype == torch.float64 for p in module.parameters())


def keep_float64(optimizer) -> None:
    """Make DeepSpeed's ZeRO-1 optimizer accumulate, reduce and update in float64 (see module doc)."""
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    if (
        not isinstance(optimizer, DeepSpeedZeroOptimizer)
        or optimizer.partition_gradients
        or optimizer.cpu_offload
        or optimizer.overlap_comm
        or optimizer.dtype != torch.float64
    ):
        raise Float64SetupError(
            f"float64 training needs ZeRO stage 1 without offload or overlap_comm and float64 "
            f"parameters; DeepSpeed built {type(optimizer).__name__}"
        )
    if any(optimizer.optimizer.state.values()):
        raise Float64SetupError("keep_float64 must run before the first optimizer step")
    optimizer.gradient_accumulation_dtype = torch.float64
    optimizer.use_grad_accum_attribute = False  # gradients stay in param.grad: the tied reduction sees them
    buckets = optimizer.ipg_buckets
    optimizer.ipg_buckets = {torch.float64: buckets.pop(optimizer.communication_data_type)}
    optimizer.communication_data_type = torch.float64
    optimizer.master_weights_and_grads_dtype = torch.float64
    for i, master in enumerate(optimizer.single_partition_of_fp32_groups):
        own = collectives.group_rank(optimizer.real_dp_process_group[i])
        partition = optimizer.parallel_partitioned_bit16_groups[i][own]
        master.data = partition.detach().clone()  # the same tensor, still the inner optimizer's parameter
    optimizer._link_all_hp_params()  # the fragment views DeepSpeed keeps for checkpoints point at the new masters
