"""Orchestration overhead: the same model, mesh and steps under bare torchrun and under orch's
Ray Train path, side by side in one run.

Size: the local V3 miniature widened (dim 256, 32 sequences of 128 tokens a step) so that one step
takes over a second on this machine, as the issue asks (PP2 x EP2 x DP2 on 4 CPU processes, gloo).
Reported: median steady-state step time (steps 3..N), start-up time from launch to the first step's
start (Ray cluster already running, as orch's embedded cluster is between commands), split at the
moment the worker's training function starts (its imports done), and the torch threads per worker.
Two more rows run bare torchrun beside an idle Ray cluster, with and without the warm pool's processes:
they tell a cost inside the ranks from one that Ray's processes beside them impose on a shared CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.cpu_sampler import CpuSampler
from bench.harness import Section
from orchestrator.cluster.embedded import EMBEDDED_RAY_ENV
from orchestrator.spec.loader import apply_overrides, apply_profile, read_spec_file

SPEC = "jobs/v3_pretrain.yaml"
STEPS = 20
OVERRIDES = [
    "model.dim=256",
    "model.inter_dim=512",
    "model.moe_inter_dim=128",
    "model.q_lora_rank=64",
    "model.kv_lora_rank=64",
    "phases.0.global_batch=32",
    "phases.0.seq_len=128",
    "phases.0.tokens=1e6",
]
COMMAND = (
    "make bench  (bench/bench_overhead.py: torchrun vs Ray Train, " + " ".join(f"--set {o}" for o in OVERRIDES) + ")"
)
STEADY_TARGET, START_TARGET = 1.05, 1.5  # issue #19: Ray Train / torchrun
WORKERS = ("orchestrator.train.standalone", "ray::RayTrainWorker")  # a training process, either launcher
SAMPLER: CpuSampler | None = None  # set while run() measures


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _summary(history: list[dict], launched: float) -> dict:
    """Median steady step; launch to the first step's start, split where the worker's training function
    starts (before: process start, imports, process group; after: spec, plan, model, engine)."""
    first = history[0]
    first_start = first["wall_time"] - first["step_time_s"]
    entered = first["wall_time"] - first["since_launch_s"]
    return {
        "step": statistics.median(m["step_time_s"] for m in history[2:]),
        "start": first_start - launched,
        "to_worker": entered - launched,
        "threads": first.get("torch_threads"),
        "gc": statistics.median(m.get("gc_s", 0.0) for m in history[2:]),  # the reporting rank's
        **_cpu(history),
    }


def _cpu(history: list[dict]) -> dict:
    """Over steps 3..N: the workers' CPU seconds per step, the share of the machine's CPU that the other
    processes of this run took (Ray's daemons and actors, idle Ray workers, torchrun's agent), and how
    often those processes woke (context switches a second)."""
    if SAMPLER is None or len(history) < 4:
        return {}
    span, spent = SAMPLER.between(history[2]["wall_time"], history[-1]["wall_time"])
    workers = sum(cpu for cmd, cpu, _ in spent.values() if any(w in cmd for w in WORKERS))
    others = [
        (cpu, switches)
        for pid, (cmd, cpu, switches) in spent.items()
        if pid != os.getpid() and not any(w in cmd for w in WORKERS) and ("ray" in cmd or "torchrun" in cmd)
    ]
    steps = len(history) - 3
    return {
        "worker_cpu_per_step": workers / steps,
        "others_cpu_share": sum(cpu for cpu, _ in others) / (span * os.cpu_count()),
        "others_wakeups": sum(switches for _, switches in others) / span,
    }


def run_torchrun(workdir: Path) -> dict:
    metrics = workdir / f"torchrun-{time.time_ns()}.jsonl"
    cmd = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc-per-node",
        "4",
        "--master-port",
        "29561",
        "-m",
        "orchestrator.train.standalone",
        SPEC,
        "--profile",
        "local",
        "--max-steps",
        str(STEPS),
        "--metrics",
        str(metrics),
    ] + [a for o in OVERRIDES for a in ("--set", o)]
    launched = time.time()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    return _summary(_read(metrics), launched)


POOL_ROLES = {"runner": 1, "train controller": None, "rank": 4}  # None: warm_control.CONTROLLER_PROCESSES


@contextlib.contextmanager
def _cluster(pool: bool):
    """A local Ray cluster, started as orch's embedded cluster runs its raylets. With ``pool``: the driver
    has no runtime environment of its own (as orch's controller) and the raylet may start the whole warm
    pool at once (orch's head allows its part, ``HEAD_RAY_ENV``; a worker node's slots start at once)."""
    import ray

    os.environ.update(EMBEDDED_RAY_ENV)  # as orch's embedded cluster runs its workers
    os.environ["DS_ACCELERATOR"] = "cpu"
    if pool:
        os.environ["RAY_worker_maximum_startup_concurrency"] = "10"
        ray.init(num_cpus=4, include_dashboard=False)
    else:
        os.environ.pop("RAY_worker_maximum_startup_concurrency", None)
        ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}})
    try:
        yield
    finally:
        ray.shutdown()


def _fill_pool() -> float:
    """What ``warm_pool.fill`` asks a head and a worker node for, on this one node: a runner, Ray Train's
    controller and its actors, four ranks; waits until their imports are done. Returns the seconds."""
    import ray

    from orchestrator.train.warm_control import CONTROLLER_PROCESSES
    from orchestrator.train.warm_pool import first_attempt_envs
    from orchestrator.train.warm_workers import HOOK_ENV, prestart_on

    started = time.time()
    envs = first_attempt_envs(json.loads(ray.get_runtime_context().get_runtime_env_string() or "{}"))
    node = ray.nodes()[0]
    total = 0
    for role, count in POOL_ROLES.items():
        count = CONTROLLER_PROCESSES if count is None else count
        assert prestart_on(node, count, envs[role]), role
        total += count
    deadline = time.time() + 300
    while time.time() < deadline:
        procs = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if HOOK_ENV in proc.environ():
                    procs.append(proc)
            except psutil.Error:
                continue
        if len(procs) >= total:
            try:
                before = [sum(p.cpu_times()[:2]) for p in procs]
                time.sleep(1.0)
                if all(sum(p.cpu_times()[:2]) - b < 0.05 for p, b in zip(procs, before)):
                    return time.time() - started
            except psutil.Error:
                pass
        time.sleep(0.5)
    raise RuntimeError(f"the warm pool's {total} processes did not come up")


def _idle_workers() -> int:
    """Ray worker processes of this one's cluster that hold no task or actor (``ray::IDLE``)."""
    idle = 0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            idle += proc.name() == "ray::IDLE"
    return idle


def run_torchrun_beside(workdir: Path, pool: bool) -> dict:
    """Bare torchrun while a local Ray cluster idles on the same cores, with or without the warm pool's
    processes (started as ``run_orch_warm_pool``'s): what Ray's processes cost ranks that are not Ray's."""
    with _cluster(pool=pool):
        if pool:
            _fill_pool()
        idle = _idle_workers()
        return {**run_torchrun(workdir), "idle_workers": idle}


def run_orch_warm_pool(workdir: Path) -> dict:
    """orch's path on a cluster whose controller has filled the warm pool (``train/warm_pool.py``): a job
    runner with the runner's runtime environment runs the Ray Train fit, its processes taken from the pool.
    Launch: the runner's creation, as the launcher does it."""
    import ray

    from orchestrator.train.ray_worker import run_with_ray_train
    from orchestrator.train.warm_control import runner_runtime_env

    mapping = apply_overrides(apply_profile(read_spec_file(SPEC), "local", SPEC), OVERRIDES)
    metrics = workdir / f"pool-{time.time_ns()}.jsonl"

    @ray.remote(num_cpus=0)
    class Runner:
        def fit(self) -> str | None:
            result = run_with_ray_train(
                mapping, 4, str(workdir / "pool"), "overhead", STEPS, str(metrics), warm_processes=True
            )
            return str(result.error) if result.error else None

    with _cluster(pool=True):
        fill_s = _fill_pool()
        launched = time.time()
        error = ray.get(Runner.options(runtime_env=runner_runtime_env()).remote().fit.remote())
        if error:
            raise RuntimeError(error)
    history = _read(metrics)
    return {**_summary(history, launched), "warm_ranks": history[0].get("warm_ranks"), "fill_s": fill_s}


def run_ray_train(workdir: Path) -> dict:
    from orchestrator.train.ray_worker import run_with_ray_train

    mapping = apply_overrides(apply_profile(read_spec_file(SPEC), "local", SPEC), OVERRIDES)
    metrics = workdir / f"ray-{time.time_ns()}.jsonl"
    with _cluster(pool=False):
        launched = time.time()
        result = run_with_ray_train(
            mapping, 4, str(workdir / "ray"), "overhead", max_steps=STEPS, metrics_path=str(metrics)
        )
        if result.error:
            raise RuntimeError(result.error)
    return _summary(_read(metrics), launched)


ROUNDS = 3


def run() -> Section:
    global SAMPLER
    bare, cold, pool, beside, beside_pool = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, CpuSampler() as SAMPLER:
        work = Path(tmp)
        for _ in range(ROUNDS):  # interleaved, so drift on the machine hits all alike
            bare.append(run_torchrun(work))
            cold.append(run_ray_train(work))
            pool.append(run_orch_warm_pool(work))
            beside.append(run_torchrun_beside(work, pool=False))
            beside_pool.append(run_torchrun_beside(work, pool=True))
    keys = ("step", "start", "to_worker", "worker_cpu_per_step", "others_cpu_share", "others_wakeups", "gc")
    b, c, o, near, near_pool = (
        {k: statistics.median(r[k] for r in rows) for k in keys} for rows in (bare, cold, pool, beside, beside_pool)
    )
    idle_bare = statistics.median(r["idle_workers"] for r in beside)
    idle_pool = statistics.median(r["idle_workers"] for r in beside_pool)
    threads = sorted({r["threads"] for r in bare + cold + pool + beside + beside_pool})
    warm = sorted({r["warm_ranks"] for r in pool})
    fill_s = statistics.median(r["fill_s"] for r in pool)
    ratio, start_ratio = o["step"] / b["step"], o["start"] / b["start"]
    cold_ratio, cold_start_ratio = c["step"] / b["step"], c["start"] / b["start"]
    excess = (near_pool["step"] / b["step"] - 1) / (ratio - 1) if ratio > 1 else float("nan")  # beside the pool / orch
    rounds = "; ".join(
        f"round {i + 1}: {x['step']:.3f} s, {y['step']:.3f} s, {z['step']:.3f} s"
        for i, (x, y, z) in enumerate(zip(bare, cold, pool))
    )

    def row(name: str, r: dict) -> str:
        return (
            f"| {name} | {r['step']:.3f} s ({r['step'] / b['step']:.3f}x) | {r['start']:.1f} s | "
            f"{r['to_worker']:.1f} s | {r['start'] - r['to_worker']:.1f} s | {r['others_cpu_share']:.1%} | "
            f"{r['others_wakeups']:.0f} |"
        )

    return Section(
        "Orchestration overhead: bare torchrun vs orch's Ray Train path",
        COMMAND,
        [
            f"Model: local V3 miniature widened to dim 256 (MLA, 8 routed + 1 shared experts, MTP), seq 128, "
            f"32 sequences per step (a step of over a second here), PP2 x EP2 x DP2 with ZeRO-1 on 4 CPU processes "
            f"(gloo), torch threads per process {', '.join(str(t) for t in threads)} under every launcher; "
            f"{STEPS} steps each, {ROUNDS} interleaved rounds per launcher (medians shown; steps of torchrun, Ray "
            f"Train in new processes, orch with its warm pool: {rounds}).",
            "",
            f"| launcher | median step (steps 3-{STEPS}; against torchrun) | launch to first step | of which launch "
            "to the training function | of which in it (model, engine) | other processes' CPU (share of the "
            "machine) | their wake-ups a second |",
            "|---|---|---|---|---|---|---|",
            row("torchrun + DeepSpeed", b),
            row("Ray Train TorchTrainer + DeepSpeed, new processes", c),
            row("orch: job runner + Ray Train + DeepSpeed, warm pool", o),
            row(f"torchrun + DeepSpeed beside an idle Ray cluster ({idle_bare:.0f} idle worker processes)", near),
            row(f"torchrun + DeepSpeed beside the warm pool ({idle_pool:.0f} idle worker processes)", near_pool),
            "",
            f"Steady-state step-time ratio (Ray Train / torchrun): **{ratio:.3f}** (orch with its warm pool; target "
            f"<= {STEADY_TARGET}: {'met' if ratio <= STEADY_TARGET else 'NOT met'}); launch to first step: "
            f"**{start_ratio:.2f}x** (target <= {START_TARGET}: {'met' if start_ratio <= START_TARGET else 'NOT met'})."
            f" Ray Train in new processes: {cold_ratio:.3f} and {cold_start_ratio:.2f}x.",
            "",
            f"The warm pool (`orchestrator/train/warm_pool.py`): the processes a first attempt needs, asked for when "
            f"the controller takes the lead and started before the launch (here a runner, Ray Train's controller "
            f"and its four actors, four ranks, all on one node; {fill_s:.0f} s from the request until all had "
            f"imported what they preload, median). The orch row's launch starts at the job runner's creation, as "
            f"orch's launcher does it; ranks that started in a pool process: {', '.join(str(w) for w in warm)} of 4. "
            "The pool's imports are paid once per process and are not in the launch; torchrun has no such thing.",
            "",
            f"Where the steady-state difference goes (CPU and context switches sampled per process, steps 3-{STEPS}, "
            f"medians): torchrun's ranks, with no Ray in them, step {near['step'] / b['step']:.3f}x as long beside an "
            f"idle Ray cluster and {near_pool['step'] / b['step']:.3f}x beside the warm pool's idle processes, against "
            f"{ratio:.3f}x under orch's path: beside the pool, torchrun's own excess was {excess:.0%} of orch's, a "
            "cost that Ray's processes beside the ranks impose, not one of the launch path inside them. A Ray worker "
            "process whose task loop is idle wakes every 10 ms (Ray 2.60's core "
            "worker checks for signals on a fixed period: `CoreWorker.CheckSignal`, "
            "src/ray/core_worker/core_worker.cc, `RunTaskExecutionLoop`); beside the pool, its "
            f"{idle_pool:.0f} idle processes and Ray's daemons woke {near_pool['others_wakeups']:.0f} times a second "
            f"({near['others_wakeups']:.0f} beside the cluster alone). On 2 cores busy with 4 ranks each wake-up "
            "displaces a rank, whose own work then takes more CPU: torchrun's training processes spent "
            f"{near_pool['worker_cpu_per_step']:.2f} CPU-s per step beside the pool against "
            f"{b['worker_cpu_per_step']:.2f} alone. Under orch's path the processes beside the ranks (Ray's "
            "daemons, Ray Train's controller and "
            f"its helper actors, the job runner, idle processes left) took {o['others_cpu_share']:.1%} of the "
            f"machine's CPU and woke {o['others_wakeups']:.0f} times a second ({c['others_cpu_share']:.1%} and "
            f"{c['others_wakeups']:.0f} in new processes); its training processes spent "
            f"{o['worker_cpu_per_step']:.2f} CPU-s per step ({c['worker_cpu_per_step']:.2f} in new processes). Of "
            f"a step, the reporting rank spent {o['gc'] * 1000:.0f} ms in Python's garbage collector under orch's "
            f"path ({c['gc'] * 1000:.0f} ms in new processes) against {b['gc'] * 1000:.0f} ms under torchrun "
            "(`orchestrator/train/gc_clock.py`).",
            "",
            "The Ray figures include Ray's own processes on the same 2 cores; orch's embedded cluster runs workers "
            "at normal priority (RAY_worker_niceness=0, Ray's default is 15). The new-processes row includes Ray "
            "Train's worker-group start and placement with a new process per rank importing Ray, torch and "
            "DeepSpeed; each Ray row starts its own local cluster, which was up before the launch.",
        ],
    )
