"""The cluster's warm pool: the processes a job's first attempt needs, started before any job asks.

Why: a restart finds warm processes that the attempt before it asked for (``warm_workers.py`` for the
ranks, ``warm_control.py`` for the head's runner and Ray Train actors), but a new job's first attempt
had none and started them all, each importing torch, Ray Train and (the ranks) DeepSpeed: 15.3 of the
22.0 s from launch to the first step on this machine at 8bfd3e5, against 4.7 s for torchrun to reach its
training function; with the pool, 2.2 s in all (bench/RESULTS.md, "Orchestration overhead"). Imports are
paid once per process; paid when the controller takes the lead, they are off every job's start-up.

How: when a controller takes the lead (at its first pass with no job active: a pool started beside a
job's own processes takes the cores they start on), and every few minutes while no job is active, its
launcher asks each live node's raylet (``PrestartWorkers``, as the per-attempt paths do) for the
processes of a first attempt, in this controller's Ray job, whose runners and their Train actors are
all of that job (a node whose part waits unused is skipped, ``fill``):
- the head node: one runner process and ``CONTROLLER_PROCESSES`` for Ray Train's controller and its
  actors;
- every node that takes ranks (an embedded node's ``orch_device`` slots, or its GPUs), spare nodes
  excepted (a rank 0 asks those once per keep-alive when a job runs, ``warm_workers.py``): one per slot.
A raylet gives an actor an idle process only if its runtime environment string is the actor's, byte
for byte, so those strings are computed here before any such actor exists:
- a runtime environment given in an actor's options is merged into its creator's: ``env_vars`` merged,
  the child's winning. When the creator's is empty, Ray serialises the child's with Python's
  ``RuntimeEnv.serialize()`` (``json.dumps(sort_keys=True)``: the runner, created by a controller that
  runs without one); otherwise the core worker merges them and writes compact JSON with sorted keys
  (Ray Train's controller under the runner, the ranks under the controller). Both were read from Ray
  2.60's own processes, and ``tests/integration/test_warm_pool.py`` checks each string against the one
  the real process reports.
- the runner's environment holds what Ray Train adds for its controller (``warm_control.py:
  train_controller_env_vars``), so the controller's content is the runner's; the ranks' adds their
  hook (``warm_workers.worker_runtime_env``).
A string that does not match (a variable Ray Train propagates set on the head's raylet but not in the
controller's process) costs nothing but the pool's processes: the first attempt starts its own, as it
did before. ``ORCH_WARM_POOL=0`` turns the pool off (a small machine that would rather keep the memory:
bench/RESULTS.md, "Warm workers", gives a process's size).
"""

from __future__ import annotations

import json
import logging
import os
import time

from orchestrator.train.warm_control import (
    CONTROLLER_PROCESSES,
    record_set_asked,
    runner_runtime_env,
    set_asked_at,
    set_due,
)
from orchestrator.train.warm_workers import KEEP_ALIVE_S, asked_at, prestart_on, record_asked, worker_runtime_env

log = logging.getLogger(__name__)

ENABLED_ENV = "ORCH_WARM_POOL"


def enabled() -> bool:
    return os.environ.get(ENABLED_ENV, "1") not in ("0", "false", "off", "no")


def merged(parent: dict, child: dict) -> dict:
    """An actor's runtime environment from its creator's and its own options' (``env_vars`` merged)."""
    env = {**parent, **child}
    if "env_vars" in parent or "env_vars" in child:
        env["env_vars"] = {**parent.get("env_vars", {}), **child.get("env_vars", {})}
    return env


def serialized(parent: dict, child: dict) -> str:
    """The runtime environment string Ray 2.60 gives an actor created with ``child`` in its options by a
    process whose own environment is ``parent`` (see the module's docstring)."""
    if not parent:
        from ray.runtime_env import RuntimeEnv

        return RuntimeEnv(**child).serialize()
    return json.dumps(merged(parent, child), separators=(",", ":"), sort_keys=True)


def first_attempt_envs(own: dict) -> dict[str, str]:
    """{role: runtime environment string} of a first attempt's processes launched from a process whose
    own runtime environment is ``own``: "runner", "train controller" (and its actors), "rank"."""
    runner = runner_runtime_env()
    runner_env = merged(own, runner)  # and the controller's: Ray Train adds variables the runner already has
    return {
        "runner": serialized(own, runner),
        "train controller": serialized(runner_env, {"env_vars": runner["env_vars"]}),
        "rank": serialized(runner_env, worker_runtime_env()),
    }


def pool_of(node: dict) -> dict[str, int]:
    """{role: processes} a live node (an entry of ``ray.nodes()``) holds in the pool."""
    resources, labels = node.get("Resources", {}), node.get("Labels", {})
    if resources.get("orch_head"):
        return {"runner": 1, "train controller": CONTROLLER_PROCESSES}
    if labels.get("orch-node") is None or labels.get("orch-pool-kind") in ("spare", "control"):
        return {}
    slots = int(resources.get("orch_device") or resources.get("GPU") or 0)
    return {"rank": slots} if slots else {}


def fill(keep_alive_s: int = KEEP_ALIVE_S) -> dict[str, dict[str, int]]:
    """From the process that launches runners (a controller that took the lead, and again while no job
    is active, ``control/controller.py: PREPARE_EVERY_S``): ask every live node for its part of the
    pool. Returns {node: {role: processes asked}} for the nodes that accepted.
    The head's set counts as the outstanding warm control set (``warm_control.set_due``), so the first
    attempt's runner, which uses it, asks for the next one as any runner does. A node is skipped while
    its part waits unused, recorded in Ray's key-value store as the per-attempt paths record theirs: a
    controller that restarts, and so takes the lead again, or asks again, does not pile up processes (a
    raylet starts as many as asked, whatever it holds); a node whose part ended with its keep-alive, was
    used by a job, or joined since is asked again."""
    import ray

    if not enabled():
        return {}
    context = ray.get_runtime_context()
    envs = first_attempt_envs(json.loads(context.get_runtime_env_string() or "{}"))
    asked: dict[str, dict[str, int]] = {}
    now = time.time()
    for node in ray.nodes():
        name = node.get("Labels", {}).get("orch-node") or node["NodeID"]
        pool = pool_of(node) if node["Alive"] else {}
        if "runner" in pool and not set_due(set_asked_at(node["NodeID"]), now, keep_alive_s):
            continue  # a set waits there (asked by this pool before a controller restart, or a runner)
        if "rank" in pool and not set_due(asked_at(envs["rank"], node["NodeID"]), now, keep_alive_s):
            continue  # this pool's part, or what the last attempt there asked for, is there unused
        accepted = {role: count for role, count in pool.items() if prestart_on(node, count, envs[role], keep_alive_s)}
        if not accepted:
            continue
        asked[name] = accepted
        # recorded if any part was taken: asking for all of it again would pile up the parts that were
        if "runner" in pool:
            record_set_asked(node["NodeID"], now)
        else:  # an attempt on the node takes them, clears this, and asks and records as many again
            record_asked(envs["rank"], node["NodeID"], now)
    log.info("warm pool asked for: %s", describe(asked))
    return asked


def describe(asked: dict[str, dict[str, int]]) -> str:
    """``fill``'s answer in words: "head: 1 runner, 5 train controller; node-1: 2 rank"."""
    return "; ".join(f"{node}: " + ", ".join(f"{n} {role}" for role, n in pool.items()) for node, pool in asked.items())
