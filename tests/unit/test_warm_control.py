"""Warm control processes (orchestrator/train/warm_control.py): the head node's processes of a job's next
attempt, prestarted. What is checked here without a cluster: how a process tells it was prestarted, and
the bound on idle warm control processes; the Ray side runs in tests/integration/test_control_plane.py
(a node loss whose restart finds its runner and Train controller warm) and bench/bench_recovery.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from orchestrator.cluster.embedded import HEAD_RAY_ENV
from orchestrator.k8s.render import HEAD_ENV
from orchestrator.train import warm_control

ROOT = Path(__file__).resolve().parents[2]
CHILD = (
    "import sys, time\n"
    "from orchestrator.train.warm_control import started_warm\n"
    "asked = float(sys.argv[1])\n"
    "time.sleep(max(0.0, asked - time.time()) + 0.05)\n"
    "print(started_warm(asked))\n"
)


def _child(requested_at: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, repr(requested_at)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def test_a_process_started_after_the_request_is_new_and_one_started_before_it_is_warm():
    """The request's time against the process's start, to the kernel's tick: psutil's create time is off by
    up to a second (Linux gives the boot time in whole seconds), and a first probe of this change took a
    runner forked just after its request for a warm one."""
    new = _child(time.time())  # asked, then forked: new
    forked = time.time()
    warm = _child(forked + 0.5)  # forked, then (half a second later) asked: warm
    assert new.communicate(timeout=60)[0].strip() == "False"
    assert warm.communicate(timeout=60)[0].strip() == "True"
    assert not warm_control.started_warm(None)  # no request recorded (a RayJob's driver): never warm


def test_the_process_age_is_this_processs_to_the_tick():
    age = warm_control.process_age_s()
    import psutil

    assert 0 < age < time.time() - psutil.Process().create_time() + 1.0
    time.sleep(0.2)
    assert 0.15 < warm_control.process_age_s() - age < 0.5


def test_a_set_is_asked_only_when_none_is_outstanding():
    """At most one set of warm control processes waits on a head node: the raylet starts as many as it is
    asked for, whatever it holds (bench/RESULTS.md, "Warm workers"), and every job's first step asks."""
    keep = 3600.0
    assert warm_control.set_due(None, 1000.0, keep)  # never asked, or the last set was used
    assert not warm_control.set_due(1000.0, 1000.0 + keep - 1, keep)  # one waits
    assert warm_control.set_due(1000.0, 1000.0 + keep, keep)  # its keep-alive is over: those processes exited


def test_the_head_raylet_may_start_a_whole_set_at_once():
    """The raylet drops a prestart beyond its startup concurrency (1 on a head with one CPU or none), so
    both heads allow a runner and the Train controller's processes at once."""
    need = 1 + warm_control.CONTROLLER_PROCESSES
    assert int(HEAD_RAY_ENV["RAY_worker_maximum_startup_concurrency"]) >= need
    assert int(HEAD_ENV["RAY_worker_maximum_startup_concurrency"]) >= need


def test_the_runner_hook_is_the_control_preload_and_ranks_keep_their_own():
    from orchestrator.train.warm_workers import HOOK, HOOK_ENV, worker_runtime_env

    assert warm_control.runner_runtime_env()["env_vars"][HOOK_ENV] == warm_control.CONTROL_HOOK
    module, _, name = warm_control.CONTROL_HOOK.rpartition(".")
    assert module == warm_control.__name__ and callable(getattr(warm_control, name))
    assert worker_runtime_env()["env_vars"][HOOK_ENV] == HOOK != warm_control.CONTROL_HOOK


def test_the_runner_carries_what_ray_train_adds_for_its_controller(monkeypatch):
    """Ray Train gives its controller the propagated variables set where ``fit()`` runs and one of its
    own; the runner holds the same, so the controller's environment has the runner's content."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    env_vars = warm_control.runner_runtime_env()["env_vars"]
    assert env_vars["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
    assert env_vars["RAY_WARN_BLOCKING_GET_INSIDE_ASYNC"] == "0"
    assert "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S" not in env_vars


def test_the_pool_names_each_roles_environment_as_ray_serialises_it():
    """Read from Ray 2.60's processes (tests/integration/test_warm_pool.py checks them for real): an actor
    given an environment by a creator without one gets Python's ``RuntimeEnv.serialize()``; one whose
    creator has one gets the merge as compact JSON with sorted keys."""
    from orchestrator.train import warm_pool
    from orchestrator.train.warm_workers import HOOK, HOOK_ENV

    assert warm_pool.serialized({}, {"env_vars": {"B": "1", "A": "2"}}) == '{"env_vars": {"A": "2", "B": "1"}}'
    assert warm_pool.serialized({"env_vars": {"A": "1"}}, {"env_vars": {"C": "3", "A": "2"}}) == (
        '{"env_vars":{"A":"2","C":"3"}}'
    )
    envs = warm_pool.first_attempt_envs({})
    assert envs["runner"].startswith('{"env_vars": {') and warm_control.CONTROL_HOOK in envs["runner"]
    assert envs["train controller"] == envs["train controller"].replace(" ", "")  # merged under the runner's
    assert envs["rank"] == envs["train controller"].replace(warm_control.CONTROL_HOOK, HOOK)
    assert f'"{HOOK_ENV}":"{HOOK}"' in envs["rank"]


def test_the_pool_holds_a_first_attempts_processes_on_each_node_but_spares():
    from orchestrator.train.warm_pool import pool_of

    def node(name: str, kind: str, **resources: float) -> dict:
        return {"Resources": resources, "Labels": {"orch-node": name, "orch-pool-kind": kind}}

    head = node("head", "control", CPU=1.0, orch_head=1.0)
    assert pool_of(head) == {"runner": 1, "train controller": warm_control.CONTROLLER_PROCESSES}
    assert pool_of(node("node-1", "spot", CPU=2.0, orch_device=2.0)) == {"rank": 2}
    assert pool_of(node("ip-10-0-1-7", "on-demand", CPU=96.0, GPU=8.0)) == {"rank": 8}
    assert pool_of(node("node-3", "spare", CPU=2.0, orch_device=2.0)) == {}
    assert pool_of({"Resources": {"CPU": 4.0}, "Labels": {}}) == {}  # not one of orch's nodes


def test_the_pool_can_be_turned_off(monkeypatch):
    from orchestrator.train import warm_pool

    monkeypatch.setenv(warm_pool.ENABLED_ENV, "0")
    assert not warm_pool.enabled() and warm_pool.fill() == {}  # (asks Ray nothing: no cluster here)
    monkeypatch.delenv(warm_pool.ENABLED_ENV)
    assert warm_pool.enabled()


def test_the_leader_prepares_the_cluster_when_idle_and_again_while_it_stays_idle(tmp_path):
    """The warm pool is asked at the leader's first pass with no job active and again every
    PREPARE_EVERY_S while none is (its processes end with their keep-alive; nodes join later), never
    while a job is active (its processes would start on the cores the job's start needs)."""
    from orchestrator.clock import ManualClock
    from orchestrator.control.controller import CANCEL_GRACE_S, PREPARE_EVERY_S, ControllerCore
    from orchestrator.control.rows import job_row
    from orchestrator.plan.planner import make_plan
    from orchestrator.simulate.cluster import SimulatedCluster
    from orchestrator.spec.loader import load_spec
    from orchestrator.state.store import StateStore
    from tests.conftest import V3_SPEC
    from tests.helpers.recording_launcher import RecordingLauncher

    class PreparingLauncher(RecordingLauncher):
        def __init__(self):
            super().__init__()
            self.prepared: list[float] = []

        def prepare(self):
            self.prepared.append(clock.now())

    spec = load_spec(V3_SPEC, "local")
    clock = ManualClock(1000.0)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock)
    cluster = SimulatedCluster(spec, 1000.0)
    cluster.clock_now = clock.now
    launcher = PreparingLauncher()
    core = ControllerCore(store, cluster, launcher, clock)
    core.reconcile()
    assert launcher.prepared == []  # not leading: a standby holds no pool
    store.insert_job(job_row(store.new_job_id(spec.name), make_plan(spec), {"file": str(V3_SPEC)}))
    core.lead()
    core.reconcile()  # the job is placed in this pass: no pool beside its start
    clock.advance(PREPARE_EVERY_S * 3)
    core.reconcile()
    assert launcher.prepared == [] and launcher.started
    (job,) = store.jobs()
    store.request_cancel(job.id, "test")
    while store.get_job(job.id)["state"] != "cancelled":  # asked to stop, then killed after the grace
        clock.advance(CANCEL_GRACE_S)
        core.reconcile()
    assert launcher.prepared == [clock.now()]  # the first pass with no job active
    for _ in range(3):
        clock.advance(PREPARE_EVERY_S / 2)
        core.reconcile()
    assert launcher.prepared == [clock.now() - PREPARE_EVERY_S * 1.5, clock.now() - PREPARE_EVERY_S / 2]
    core.lead()  # a leader again (after a restart of the lease): at once
    core.reconcile()
    assert launcher.prepared[-1] == clock.now() and len(launcher.prepared) == 3


def test_a_pool_request_that_still_waits_on_a_raylet_is_not_doubled(monkeypatch, tmp_path):
    """Two requests at once could both find a node due and ask it twice (a raylet starts as many as
    asked): the launcher starts none while its last one runs, and counts each one that ended."""
    import threading

    from orchestrator.control import launcher as launcher_module

    release, calls = threading.Event(), []

    def slow_fill():
        calls.append(1)
        release.wait(30)
        return {}

    monkeypatch.setattr(launcher_module, "fill", slow_fill)
    launcher = launcher_module.RayLauncher(f"sqlite:///{tmp_path / 'state.db'}", str(tmp_path))
    launcher.prepare()
    launcher.prepare()  # the first still waits
    release.set()
    launcher._filling.join(30)
    assert calls == [1] and launcher.fills == 1
    launcher.prepare()
    launcher._filling.join(30)
    assert calls == [1, 1] and launcher.fills == 2
