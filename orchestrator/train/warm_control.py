"""Warm control processes: the head node's processes of a job's next attempt, started before it needs them.

Why: besides a process per rank (``warm_workers.py``), every attempt starts six processes on the head
node: its job runner (``control/runner.py``) and, through it, Ray Train's controller and the four actors
the controller starts there (``CONTROLLER_PROCESSES``). Each imports Ray Train and torch as it starts,
and the head raylet starts a bounded number at once. On the warm path of bench_recovery at fdfb0ac
that was 2.0 s of runner start, then 3.5 s from the runner's ``fit()`` to the Train controller's first
log line (its debug log, ``logs/train/ray-train-sys-controller-*.log``), then new processes on the head
beside the worker group's start.

How, with the two Ray mechanisms of ``warm_workers.py``:
- The runner runs with a setup hook, ``preload``, which imports what those processes import. Ray
  Train's controller and the actors it creates inherit the hook: an actor's runtime environment
  is its creator's, with the ``env_vars`` of its own options merged in (Ray 2.60:
  ``train/v2/api/data_parallel_trainer.py: _initialize_and_run_controller`` adds Ray Train's
  variables; the modules named at ``CONTROLLER_PROCESSES`` set none for the actors the controller
  starts). Ray Train's workers replace it with their own (``RunConfig.worker_runtime_env``).
- The raylet gives an actor a prestarted process only if its runtime environment string is the same,
  and the controller's is not the runner's, so the controller records its own as it starts
  (``record_controller_env``, called by ``controller_env.RecordControllerEnv``) in Ray's key-value
  store on the GCS.
- After an attempt's first step its runner asks its own node for one warm process with its runtime
  environment (the next runner's) and ``CONTROLLER_PROCESSES`` with the controller's. One such set at
  most is outstanding per head node and Ray job: it is asked only when none was asked within the
  keep-alive or the last one was used or lost (each warm-restart runner a launcher starts clears it). So a
  head node holds about six idle warm control processes, however many jobs run and finish there (one
  set more for each two runners that start at the same moment); when two jobs restart at once, one of
  them starts these processes cold.
- The head raylet must be allowed to start the six at once: it drops a prestart beyond its startup
  concurrency (``cluster/embedded.py: HEAD_RAY_ENV``; ``k8s/render.py: HEAD_ENV``).
"""

from __future__ import annotations

import logging
import os
import time

import psutil

from orchestrator.train.warm_workers import HOOK_ENV, KEEP_ALIVE_S, KV_NAMESPACE, prestart_on

log = logging.getLogger(__name__)

CONTROL_HOOK = "orchestrator.train.warm_control.preload"
# The actors Ray Train 2.60 starts on the head for a run, each in a process with the controller's runtime
# environment: the controller; its placement-group cleaner (train/v2/_internal/callbacks/
# placement_group_callback.py); the worker group's synchronization actor (execution/worker_group/
# worker_group.py); the dataset manager (callbacks/datasets.py, pinned to the controller's node); the
# preemption watcher (callbacks/preemption_callback.py, placed by Ray's default policy, which prefers the
# local node). A restart at fdfb0ac started each in a new process on the head (raylet log).
CONTROLLER_PROCESSES = 5
# A warm process started at an earlier attempt's first step, seconds or hours before; a new one is forked
# after the request, and the kernel counts a process's start in clock ticks (10 ms)
MARGIN_S = 0.1


def preload() -> None:
    """The setup hook of the runner and the Ray Train actors it starts on the head node: Ray Train's
    controller and torch (``TorchConfig``, which the controller unpickles, imports it)."""
    import ray.train.torch  # noqa: F401
    import ray.train.v2._internal.execution.controller  # noqa: F401
    import torch  # noqa: F401


def runner_runtime_env() -> dict:
    """The job runner's runtime environment (``JobRunner.options``), built where the launcher runs (the
    head node's controller). Besides the hook it holds the variables Ray Train gives its controller
    (``train_controller_env_vars``), so that the controller's environment has the runner's content and
    the warm pool can name both processes' environments before any runner exists (``warm_pool.py``)."""
    return {"env_vars": {**train_controller_env_vars(), HOOK_ENV: CONTROL_HOOK}}


def train_controller_env_vars() -> dict[str, str]:
    """The variables Ray Train 2.60 puts in its controller's runtime environment: those of
    ``ENV_VARS_TO_PROPAGATE`` set in the process that calls ``fit()`` (the runner, which runs with this
    process's: the launcher's, on the same head node) and ``RAY_WARN_BLOCKING_GET_INSIDE_ASYNC`` = "0"
    (``train/v2/api/data_parallel_trainer.py: _initialize_and_run_controller``; the workers get the same
    propagated ones, ``worker_group.py: _get_worker_runtime_env``)."""
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    propagated = {name: os.environ[name] for name in ENV_VARS_TO_PROPAGATE if name in os.environ}
    return {"RAY_WARN_BLOCKING_GET_INSIDE_ASYNC": "0", **propagated}


def _keys(job_hex: str, node_id: str) -> tuple[bytes, bytes]:
    """(the Train controller's runtime environment, when a set was last asked on this node)."""
    return f"{job_hex}:train-controller-env".encode(), f"{job_hex}:{node_id}:control-asked-at".encode()


def _started_key(run_name: str) -> bytes:
    return f"{run_name}:train-controller-started".encode()


def record_controller_env(run_name: str) -> None:
    """In Ray Train's controller of run ``run_name``, as it starts: its exact runtime environment
    string (for the next attempt's warm processes) and when its process started (for this attempt's
    runner to say whether the controller started warm)."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    context = ray.get_runtime_context()
    env_key, _ = _keys(context.get_job_id(), context.get_node_id())
    _internal_kv_put(env_key, context.get_runtime_env_string().encode(), overwrite=True, namespace=KV_NAMESPACE)
    started = str(time.time() - process_age_s()).encode()
    _internal_kv_put(_started_key(run_name), started, overwrite=True, namespace=KV_NAMESPACE)


def controller_started_warm(run_name: str, requested_at: float) -> bool | None:
    """Whether run ``run_name``'s Train controller started in a process older than ``requested_at``
    (when its runner called ``fit``); None when the controller recorded nothing. Forgets the record."""
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get

    value = _internal_kv_get(_started_key(run_name), namespace=KV_NAMESPACE)
    if value is None:
        return None
    _internal_kv_del(_started_key(run_name), namespace=KV_NAMESPACE)
    return float(value) < requested_at - MARGIN_S


def started_warm(requested_at: float | None) -> bool:
    """Whether this process existed before ``requested_at`` (the launcher's request for this actor):
    then it is a warm process asked for by an earlier attempt."""
    return requested_at is not None and time.time() - process_age_s() < requested_at - MARGIN_S


def process_age_s() -> float:
    """Seconds since this process started, to the kernel's clock tick. ``psutil``'s create time adds the
    boot time, which Linux gives in whole seconds: a process started just after a request could seem
    to predate it by up to a second (a new runner was taken for a warm one)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            up = float(uptime.read().split()[0])
        return up - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): starttime
    except (OSError, ValueError, IndexError):  # not Linux
        return time.time() - psutil.Process().create_time()


def set_due(asked_at: float | None, now: float, keep_alive_s: float) -> bool:
    """Ask for a set now: none is outstanding (never asked, used since, or its keep-alive is over)."""
    return asked_at is None or now - asked_at >= keep_alive_s


def runner_started() -> None:
    """A launcher's runner started, so its attempt's first step may ask for a set again. A runner in a
    warm process used the outstanding set (its Train controller takes the rest); one in a new process
    found none: it is gone (Ray ends a finished Ray job's idle workers, a restarted head holds none) or
    another restart took it at the same moment, which leaves one set more than the bound."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_del

    context = ray.get_runtime_context()
    _internal_kv_del(_keys(context.get_job_id(), context.get_node_id())[1], namespace=KV_NAMESPACE)


def set_asked_at(node_id: str) -> float | None:
    """When a warm control set was last asked for on ``node_id`` in this process's Ray job and not used
    since (a runner that starts clears it, ``runner_started``)."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    _, asked_key = _keys(ray.get_runtime_context().get_job_id(), node_id)
    value = _internal_kv_get(asked_key, namespace=KV_NAMESPACE)
    return float(value) if value is not None else None


def record_set_asked(node_id: str, at: float) -> None:
    """A warm control set was asked for on ``node_id`` at ``at`` in this process's Ray job (the warm
    pool's head part, ``warm_pool.py``): the next runner uses it rather than asking for another."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    _, asked_key = _keys(ray.get_runtime_context().get_job_id(), node_id)
    _internal_kv_put(asked_key, str(at).encode(), overwrite=True, namespace=KV_NAMESPACE)


def prestart_for_next_attempt(keep_alive_s: int = KEEP_ALIVE_S) -> bool:
    """From a job runner after its attempt's first step: a warm set on its own node for the next
    attempt, unless one is outstanding. True when a set was asked for and every part accepted."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    env_key, asked_key = _keys(context.get_job_id(), node_id)
    asked = _internal_kv_get(asked_key, namespace=KV_NAMESPACE)
    now = time.time()
    if not set_due(float(asked) if asked is not None else None, now, keep_alive_s):
        return False
    controller_env = _internal_kv_get(env_key, namespace=KV_NAMESPACE)
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id and n["Alive"]), None)
    if node is None or controller_env is None:  # (no controller recorded: a run without warm restart)
        return False
    accepted = prestart_on(node, 1, context.get_runtime_env_string(), keep_alive_s)
    accepted = prestart_on(node, CONTROLLER_PROCESSES, controller_env.decode(), keep_alive_s) and accepted
    if accepted:
        _internal_kv_put(asked_key, str(now).encode(), overwrite=True, namespace=KV_NAMESPACE)
    else:
        log.warning("warm control processes not asked for on %s: the next attempt starts them cold", node_id)
    return accepted
