"""Warm workers: Ray worker processes started before a restart needs them, with torch, DeepSpeed and
orch's model code already imported.

Why: Ray Train starts every attempt's worker group afresh, one new process per rank on every node
(survivors included), and each new process imports torch, DeepSpeed and orch before it can train;
on a loaded 2-core node that is seconds per rank (bench/RESULTS.md, "Recovery from a node loss").

How, with Ray's own mechanisms (no fork of Ray Train):
- Ray's worker-process setup hook: a runtime environment naming a ``module.function`` that every
  worker process runs as it starts (``ray/_private/workers/default_worker.py`` reads it from the
  ``__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR`` environment variable). orch's hook, ``preload``,
  imports what a rank needs. Ray Train's workers get it through ``RunConfig.worker_runtime_env``.
- The raylet's ``PrestartWorkers`` RPC (``src/ray/protobuf/node_manager.proto``; newer Ray wraps
  it as ``prestart_workers_on_local_node``, which the installed release lacks, so orch sends the
  request itself over Ray's authenticated gRPC channel): idle workers for a (job, runtime environment), kept alive
  ``keep_alive_s``. An actor created later with the same runtime environment is given one of them
  (the raylet's worker pool matches the runtime environment's hash) instead of a new process.

So while a job trains, its rank 0 asks every node of the gang, and every spare node not asked within
the keep-alive, for as many warm workers as the node has devices, with its own runtime environment (the
exact string, so the same hash); a restart's Ray Train workers then start in processes that have
imported everything already.
What Ray Train and DeepSpeed still rebuild each time (the worker group's actors and torch.distributed,
the engine's process groups and optimizer) is measured in bench/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import logging
import time

import grpc

log = logging.getLogger(__name__)

HOOK = "orchestrator.train.warm_workers.preload"
HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"  # ray._private.ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR
KEEP_ALIVE_S = 6 * 3600
KV_NAMESPACE = "orch-warm-workers"  # when each spare was last asked (``prestart_for_next_attempt``)


def preload() -> None:
    """The setup hook each warm worker process runs as it starts: the imports a rank pays for,
    including the two that ``deepspeed.initialize`` triggers lazily: ``torch._dynamo`` (torch's
    optimizers import it on construction) and DeepSpeed's Muon module (its optimizer sanity check
    imports it, and it calls ``torch.compile`` at import). Profiled under torchrun on the local
    miniature, they were 8 of the engine build's 8.2 s: imported here, a warm rank's build skips them."""
    import deepspeed  # noqa: F401
    import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401
    import ray.train.torch  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401

    import orchestrator.train.trainer  # noqa: F401


def worker_runtime_env() -> dict:
    """The runtime environment of warm Ray Train workers (``RunConfig.worker_runtime_env``)."""
    return {"env_vars": {HOOK_ENV: HOOK}}


def prestart(nodes: dict[str, int], serialized_runtime_env: str, keep_alive_s: int = KEEP_ALIVE_S) -> list[str]:
    """Ask each live node named in ``nodes`` ({orch node name: workers}) for that many warm workers
    of this job; returns the nodes that accepted. Called in a Ray Train worker with its own runtime
    environment string (``get_runtime_env_string()``): exactly what the raylet hashes for the next
    attempt's workers, Ray Train's own variables included. Asynchronous on the raylet's side: the
    processes start (and import) after this returns."""
    import ray

    asked = []
    for node in ray.nodes():
        name = node.get("Labels", {}).get("orch-node")
        if not node["Alive"] or nodes.get(name, 0) < 1:
            continue
        if prestart_on(node, nodes[name], serialized_runtime_env, keep_alive_s):
            asked.append(name)
    return asked


def prestart_on(node: dict, count: int, serialized_runtime_env: str, keep_alive_s: int = KEEP_ALIVE_S) -> bool:
    """Ask one node (an entry of ``ray.nodes()``) for ``count`` warm workers of this job with this
    runtime environment string; False when the node refused or is going away (its restart is cold)."""
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
    from ray.core.generated.runtime_environment_pb2 import RuntimeEnvInfo

    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON,
        job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
        runtime_env_info=RuntimeEnvInfo(serialized_runtime_env=serialized_runtime_env),
        keep_alive_duration_secs=keep_alive_s,
        num_workers=count,
    )
    channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
    try:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(request, timeout=10)
        return True
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            # the raylet may have started them all the same: counted as asked, so that the caller records
            # it and does not ask for as many again (a busy raylet would pile them up at every try)
            log.warning("warm workers on %s: no answer within 10 s, taken as asked", node.get("NodeManagerAddress"))
            return True
        log.warning("no warm workers on %s: %s", node.get("NodeManagerAddress"), exc)
        return False
    finally:
        channel.close()


def spares_due(spares: list[str], asked_at: dict[str, float], now: float, keep_alive_s: float) -> list[str]:
    """The spares to ask for warm workers now: those not asked (for this job and runtime environment)
    within the keep-alive. A spare's warm workers are used only when it joins a gang, so asking it again
    at every attempt would add to the ones it holds: the raylet's ``PrestartWorkers`` starts as many new
    processes as asked, whatever is idle (5 -> 7 -> 9 -> 11 processes for three requests in
    bench/RESULTS.md, "Warm workers")."""
    return [n for n in spares if now - asked_at.get(n, float("-inf")) >= keep_alive_s]


def _record_key(job_hex: str, runtime_env: str, node_id: str) -> bytes:
    digest = hashlib.sha256(runtime_env.encode()).hexdigest()[:16]
    return f"{job_hex}:{digest}:{node_id}".encode()


def asked_at(runtime_env: str, node_id: str) -> float | None:
    """When warm workers of this Ray job and runtime environment were last asked on the Ray node
    ``node_id`` and not used since: by a rank 0 (its gang's nodes and the spares) or by the warm pool
    (``warm_pool.py``). Keyed by the Ray node, not orch's name for it: a replacement started under the
    same name (`orch nodes preempt --replace`, a new pod) holds none of what its predecessor was asked."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    value = _internal_kv_get(
        _record_key(ray.get_runtime_context().get_job_id(), runtime_env, node_id), namespace=KV_NAMESPACE
    )
    return float(value) if value is not None else None


def record_asked(runtime_env: str, node_id: str, at: float) -> None:
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    key = _record_key(ray.get_runtime_context().get_job_id(), runtime_env, node_id)
    _internal_kv_put(key, str(at).encode(), overwrite=True, namespace=KV_NAMESPACE)


def forget_asked(runtime_env: str, node_ids: list[str]) -> None:
    import ray
    from ray.experimental.internal_kv import _internal_kv_del

    job_hex = ray.get_runtime_context().get_job_id()
    for node_id in node_ids:
        _internal_kv_del(_record_key(job_hex, runtime_env, node_id), namespace=KV_NAMESPACE)


def orch_nodes() -> dict[str, dict]:
    """{orch node name: its entry of ``ray.nodes()``} for the live nodes that carry one."""
    import ray

    return {n["Labels"]["orch-node"]: n for n in ray.nodes() if n["Alive"] and n.get("Labels", {}).get("orch-node")}


def attempt_started(assignment: list[str]) -> None:
    """From rank 0 as an attempt's workers come up: the warm workers recorded on the gang's nodes were
    this attempt's to take, so none counts as waiting there any more. Cleared at once rather than when
    the next ones are asked after the first step: an attempt that ends before that leaves nothing behind
    it, and a record left standing would keep the warm pool from asking those nodes again for the
    keep-alive (6 h)."""
    import ray

    live = orch_nodes()
    env = ray.get_runtime_context().get_runtime_env_string()
    forget_asked(env, [live[name]["NodeID"] for name in assignment if name in live])


def prestart_for_next_attempt(assignment: list[str], per_node: int, keep_alive_s: int = KEEP_ALIVE_S) -> list[str]:
    """From a running worker: warm workers on the gang's nodes and on the spare nodes that may replace
    a lost one. The gang's nodes are asked at every attempt (every rank restarts in a new process,
    survivors too, so each attempt uses up the warm workers the one before started). A spare is asked
    once per keep-alive. When a node was asked is kept in Ray's internal key-value store (on the GCS, so
    every attempt, every rank 0 and the warm pool see it), per job, runtime environment and Ray node: a
    gang's node is recorded at every attempt (and cleared as the next one starts, ``attempt_started``),
    so after the job its warm workers count as the node's part of the warm pool (``warm_pool.fill``
    skips it rather than ask for as many again); a spare that joins a gang is recorded with it."""
    import ray

    env = ray.get_runtime_context().get_runtime_env_string()
    live = orch_nodes()
    spares = [
        name
        for name, node in live.items()
        if node["Labels"].get("orch-pool-kind") == "spare" and name not in assignment
    ]
    asked = {name: at for name in spares if (at := asked_at(env, live[name]["NodeID"])) is not None}
    now = time.time()
    due = spares_due(spares, asked, now, keep_alive_s)
    accepted = []
    for name in [*assignment, *due]:
        if name in live and prestart_on(live[name], per_node, env, keep_alive_s):
            record_asked(env, live[name]["NodeID"], now)  # at once: a rank 0 killed midway leaves none unrecorded
            accepted.append(name)
    return accepted
