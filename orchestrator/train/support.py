"""What the training runtime executes, as opposed to what the planner can plan.

The planner plans fp8 training, tensor parallelism and DualPipe (to cost the published V3 run);
the runtime trains bf16/fp32 with DeepSpeed's 1F1B pipeline and no tensor parallelism. A job that
asks for more is refused before it starts, naming the field, the value and the fix, rather than
silently running something else (an fp8 job quietly training in bf16 would be billed as fp8).
Pure: no torch, so ``orch submit`` can call it without a GPU stack.
"""

from __future__ import annotations

from orchestrator.errors import FieldProblem, ProblemListError
from orchestrator.spec.schema import JobSpec


class RuntimeSupportError(ProblemListError):
    """The spec is valid and plannable, but the training runtime does not execute part of it."""

    title = "not runnable by orch's training runtime"


def runtime_problems(spec: JobSpec) -> list[FieldProblem]:
    problems = []
    if spec.training.precision == "fp8":
        problems.append(
            FieldProblem(
                "training.precision",
                "fp8 training is planned (memory, cost) but not implemented by the runtime; it would not run in fp8",
                "fp8",
                fix="use --set training.precision=bf16 to train",
            )
        )
    if spec.parallelism.tensor != 1:
        problems.append(
            FieldProblem(
                "parallelism.tensor",
                "tensor parallelism is planned but not executed by the runtime",
                spec.parallelism.tensor,
                fix="use --set parallelism.tensor=1",
            )
        )
    if spec.parallelism.schedule != "1f1b":
        problems.append(
            FieldProblem(
                "parallelism.schedule",
                f"{spec.parallelism.schedule} is planned but DeepSpeed executes 1F1B",
                spec.parallelism.schedule,
                fix="use --set parallelism.schedule=1f1b to run",
            )
        )
    return problems


def check_runnable(spec: JobSpec) -> None:
    """Raise ``RuntimeSupportError`` (exit status 2 from the CLI) listing every unsupported setting."""
    problems = runtime_problems(spec)
    if problems:
        raise RuntimeSupportError(problems, spec.name)
