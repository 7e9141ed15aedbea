"""What `orch status`, `orch logs` and the event log say about a job's checkpoints (#17's drill: the
emergency checkpoint at step 22 committed in time, attempt 2 resumed at step 23, yet `status` showed
``ckpt 20`` and step 22's commit was logged twice).

The job's runner is the real ``JobRunner`` class (its methods called directly, as the Ray actor's
would be: rank 0's ``on_step`` each step and ``checkpoint_result`` after an emergency save), writing
the job log under a private ORCH_HOME and a real SQLite state store; the checkpoints are real ones,
committed by ``CheckpointStore`` on the job's object store; `orch` runs as a real process."""

from __future__ import annotations

import json

import pytest

from orchestrator.checkpoint.locate import open_job_checkpoints
from orchestrator.control.rows import job_row
from orchestrator.control.runner import JobRunner
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import EventRecord, StateStore
from tests.conftest import V3_SPEC
from tests.unit.test_cli_conventions import orch

Runner = JobRunner.__ray_metadata__.modified_class  # the actor's class itself, without Ray


@pytest.fixture
def drill(orch_home):
    """A submitted job, its state store and its checkpoint store."""
    store = StateStore(f"sqlite:///{orch_home / 'state.db'}")
    spec = load_spec(V3_SPEC, "local")
    job_id = store.insert_job(
        job_row("drill-1", make_plan(spec), {"file": str(V3_SPEC)}),
        [EventRecord("job.submitted", "drill-1: submitted")],
    )
    return orch_home, store, job_id, open_job_checkpoints(spec.checkpoint, job_id, orch_home)


def commit(checkpoints, step: int, attempt: int) -> None:
    """A real two-rank checkpoint: both shards and their receipts, then the manifest."""
    for rank in range(2):
        checkpoints.put_shard(step, rank, f"rank {rank} at step {step}".encode(), attempt)
    checkpoints.commit(step, 2, {"pipeline": 2, "data": 1}, float(step * 1000), {}, timeout_s=5, attempt=attempt)


def step(runner, number: int, committed: int | None, **extra) -> None:
    runner.on_step(
        {"step": number, "loss": 5.0, "tokens_per_s": 1000.0, "step_time_s": 0.5, "checkpoint_step": committed, **extra}
    )


def status_figure(home, job_id: str) -> str:
    line = orch("status", job_id, home=home).stdout.splitlines()[0]
    return line.split("ckpt ")[1].split()[0]


def test_the_drill_logs_each_commit_once_and_status_shows_the_newest(drill):
    home, store, job_id, checkpoints = drill
    first = Runner(job_id, 1, str(store.url), str(home))
    for n in range(1, 20):
        step(first, n, None)
    commit(checkpoints, 20, attempt=1)
    for n in (20, 21, 22):
        step(first, n, 20)
    assert status_figure(home, job_id) == "20"
    commit(checkpoints, 22, attempt=1)  # the notice's emergency save, after step 22
    first.checkpoint_result({"step": 22, "committed": True, "deadline": None})
    assert status_figure(home, job_id) == "22" == str(checkpoints.latest().step)
    second = Runner(job_id, 2, str(store.url), str(home))  # attempt 2 restores step 22
    step(second, 23, 22, resumed_from=22, restore_s=1.0)
    step(second, 24, 22)
    assert status_figure(home, job_id) == "22"
    listed = json.loads(orch("checkpoints", "list", job_id, "--json", home=home).stdout)
    assert [c["step"] for c in listed] == [20, 22]
    as_json = json.loads(orch("status", job_id, "-o", "json", home=home).stdout)
    assert as_json["last_checkpoint_step"] == listed[-1]["step"]

    log = (home / "jobs" / job_id / "job.log").read_text()
    assert log.count("checkpoint committed at step 20") == 1
    assert "checkpoint committed at step 22" not in log  # step 22 committed once: as the emergency save
    assert log.count("emergency checkpoint at step 22: committed in time") == 1
    human = orch("logs", job_id, home=home).stdout
    assert human.count("at step 22") == 1 and human.count("at step 20") == 1
    announced = [e["data"]["step"] for e in store.events(job_id) if e["kind"] == "checkpoint.committed"]
    assert announced == [20]
    assert [e["data"]["step"] for e in store.events(job_id) if e["kind"] == "checkpoint.emergency"] == [22]


def test_a_restore_of_an_older_checkpoint_moves_the_figure_back_without_a_new_commit(drill):
    """The newest checkpoint was unreadable and attempt 2 restored the one before: `status` shows
    what the job will resume from, and no commit is claimed for it."""
    home, store, job_id, checkpoints = drill
    first = Runner(job_id, 1, str(store.url), str(home))
    step(first, 10, 10)
    step(first, 20, 20)
    second = Runner(job_id, 2, str(store.url), str(home))
    step(second, 11, 10, resumed_from=10)
    assert status_figure(home, job_id) == "10"
    log = (home / "jobs" / job_id / "job.log").read_text()
    assert [log.count(f"checkpoint committed at step {s}") for s in (10, 20)] == [1, 1]
    step(second, 15, 15)  # a new commit after the restore is announced as usual
    assert status_figure(home, job_id) == "15"
    assert [e["data"]["step"] for e in store.events(job_id) if e["kind"] == "checkpoint.committed"] == [10, 20, 15]


def test_a_commit_in_memory_is_logged_as_such_and_steps_resumed_below_it_count_as_trained_again(drill):
    """A step committed in peer memory is what a restart resumes from (the ledger's cut), logged as in
    memory until its upload commits; an attempt that could not read it (its copies gone) resumes from
    the durable step and marks the steps it trains again (``redo_until``), which the ledger counts lost."""
    home, store, job_id, _ = drill
    first = Runner(job_id, 1, str(store.url), str(home))
    step(first, 10, 10, checkpoint_durable_step=10)
    step(first, 15, 15, checkpoint_durable_step=10)  # 15 in memory, its upload under way
    step(first, 16, 15, checkpoint_durable_step=15)  # ... and committed
    step(first, 20, 20, checkpoint_durable_step=15)  # 20 in memory; then the node and its buddy go
    assert status_figure(home, job_id) == "20"
    second = Runner(job_id, 2, str(store.url), str(home))
    step(second, 16, 15, resumed_from=15, checkpoint_durable_step=15)
    assert status_figure(home, job_id) == "15"
    log = (home / "jobs" / job_id / "job.log").read_text()
    assert [log.count(f"checkpoint committed at step {s}") for s in (10, 15, 20)] == [1, 1, 0]
    assert [log.count(f"checkpoint at step {s} committed in peer memory") for s in (10, 15, 20)] == [0, 1, 1]
    assert "steps 16-20 are trained again and counted as lost" in log
    assert store.metrics_of_attempt(job_id, 2)[0]["redo_until"] == 20
    assert "redo_until" not in store.metrics_of_attempt(job_id, 1)[0]
