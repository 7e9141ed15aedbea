"""Run a job's training under a plain launcher: ``torchrun --nproc-per-node N -m orchestrator.train.standalone``.

The baseline orch's Ray Train path is compared against (bench/bench_overhead.py), and a way to run
the trainer without Ray. Rank 0 writes one JSON line of metrics per step to ``--metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from orchestrator.checkpoint.locate import open_job_checkpoints
from orchestrator.clock import SystemClock
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.train import collectives
from orchestrator.train.trainer import CheckpointSetup, Trainer


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="orchestrator.train.standalone")
    parser.add_argument("file")
    parser.add_argument("--profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--metrics", help="JSON-lines file rank 0 appends step metrics to")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--job-id", help="checkpoint into <checkpoint.uri>/<job-id> and resume from it")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = load_spec(args.file, args.profile, args.overrides)
    plan = make_plan(spec)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    collectives.initialise()
    out = open(args.metrics, "a") if args.metrics and collectives.rank() == 0 else None

    def report(metrics: dict) -> None:
        if out:
            out.write(json.dumps({**metrics, "since_launch_s": time.time() - started, "wall_time": time.time()}) + "\n")
            out.flush()

    checkpoints = None
    if args.job_id:
        checkpoints = CheckpointSetup(open_job_checkpoints(spec.checkpoint, args.job_id), SystemClock())
    trainer = Trainer(spec, plan, report, checkpoints=checkpoints)
    trainer.train(args.max_steps)
    if trainer.checkpointer is not None:
        trainer.checkpointer.wait()
    collectives.barrier()
    collectives.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
