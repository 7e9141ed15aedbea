"""The CLI's conventions (#17): validate runs the runtime's own checks and hands on its arguments,
one money format, newest-first limits, -o table|wide|json|yaml, ORCH_HOME/config.yaml, completion
generated from the parser, `orch version`, and human logs with --tail/--since/--json. Each test runs
the real `orch` process against a real SQLite state store in a private ORCH_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator.humanize import ago, duration, money
from orchestrator.plan.planner import make_plan
from orchestrator.spec.loader import load_spec
from orchestrator.state.store import StateStore
from orchestrator.train.support import RuntimeSupportError, runtime_problems
from tests.conftest import ROOT, V3_SPEC


def orch(*args: str, home=None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, **({"ORCH_HOME": str(home)} if home else {}), **(env or {})}
    environ.setdefault("PYTHONPATH", str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=environ, cwd=ROOT
    )


# ---------------------------------------------------------------- validate = what the runtime runs


@pytest.mark.parametrize(
    "override,field",
    [("parallelism.schedule=dualpipe", "parallelism.schedule"), ("training.precision=fp8", "training.precision")],
)
def test_validate_refuses_what_the_runtime_refuses(orch_home, override, field):
    proc = orch("validate", str(V3_SPEC), "-p", "local", "--set", override, home=orch_home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not runnable by orch's training runtime" in proc.stderr and field in proc.stderr
    assert "fix: use --set" in proc.stderr and "--plan-only" in proc.stderr
    assert (
        orch("validate", str(V3_SPEC), "-p", "local", "--set", override, "--plan-only", home=orch_home).returncode == 0
    )


def test_tensor_parallelism_is_refused_by_the_shared_check():
    spec = load_spec(V3_SPEC, "local", ["parallelism.tensor=2"])
    assert [p.path for p in runtime_problems(spec)] == ["parallelism.tensor"]
    assert runtime_problems(load_spec(V3_SPEC, "local")) == []


def test_the_workers_call_the_same_check(monkeypatch):
    from orchestrator.train import pipeline

    plan = make_plan(load_spec(V3_SPEC, "local", ["parallelism.schedule=dualpipe"]))
    with pytest.raises(RuntimeSupportError, match="parallelism.schedule"):
        pipeline.check_layout(plan, plan.mesh.world_size)
    calls = []
    monkeypatch.setattr(pipeline, "check_runnable", lambda spec: calls.append(spec.name))
    pipeline.check_layout(plan, plan.mesh.world_size)
    assert calls == ["v3-local"]


def test_submit_refuses_before_starting_a_cluster(orch_home):
    proc = orch("submit", str(V3_SPEC), "-p", "local", "--set", "training.precision=fp8", "--detach", home=orch_home)
    assert proc.returncode == 2 and "training.precision" in proc.stderr
    assert "starting the embedded Ray cluster" not in proc.stdout and not (orch_home / "cluster.json").exists()


def test_validate_next_hint_keeps_profile_and_overrides(orch_home):
    proc = orch(
        "validate",
        str(V3_SPEC),
        "-p",
        "local",
        "--set",
        "training.seed=9",
        "--set",
        "training.optimizer.betas=[0.9, 0.95]",
        home=orch_home,
    )
    assert proc.returncode == 0, proc.stderr
    hint = proc.stdout.splitlines()[-1]
    assert (
        f"orch submit {V3_SPEC} --profile local --set training.seed=9 "
        "--set 'training.optimizer.betas=[0.9, 0.95]' to run it"
    ) in hint


# ---------------------------------------------------------------- formats


def test_one_money_format():
    assert [money(x) for x in (5.353e6, 65787.39, 170_000, 2.0, 0.17, 999_950, 0.00399, 0, None)] == [
        "$5.35M",
        "$65.8K",
        "$170K",
        "$2.00",
        "$0.170",
        "$1.00M",
        "$0.00399",
        "$0.00",
        "-",
    ]


def test_durations_and_relative_times():
    assert [duration(s) for s in (5, 200, 7300, 90000, None)] == ["5s", "3m20s", "2h01m", "1d01h", "-"]
    assert ago(100.0, 160.0) == "1m ago" and ago(200.0, 160.0) == "in 40s"


@pytest.fixture
def jobs_home(orch_home):
    """Three jobs and their events in a real state store."""
    store = StateStore(f"sqlite:///{orch_home / 'state.db'}")
    spec = load_spec(V3_SPEC, "local").model_dump(mode="json")
    for i in range(3):
        store.insert_job(
            {
                "id": f"job-{i}",
                "name": f"run{i}",
                "team": "research",
                "priority": i,
                "spec": spec,
                "source": {},
                "world_size": 4,
                "nodes": 2,
                "devices_per_node": 2,
                "total_steps": 67,
            }
        )
        store.add_event("test.event", f"job-{i}: event {i}", f"job-{i}")
        time.sleep(0.01)
    return orch_home


def test_events_limit_gives_the_newest(jobs_home):
    proc = orch("events", "--limit", "2", home=jobs_home)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "test.event" in line]
    assert [line.split("job-")[1][0] for line in lines] == ["1", "2"]  # the newest two, oldest first
    data = json.loads(orch("events", "--limit", "1", "-o", "json", home=jobs_home).stdout)
    assert [e["message"] for e in data] == ["job-2: event 2"]


def test_list_is_newest_first_in_every_format(jobs_home):
    table = orch("list", home=jobs_home).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "TEAM", "PRI", "STATE"] and [r.split()[0] for r in table[1:]] == [
        "job-2",
        "job-1",
        "job-0",
    ]
    assert "ago" in table[1]
    wide = orch("list", "-o", "wide", home=jobs_home).stdout.splitlines()
    assert "DEVICES" in wide[0] and "CKPT" in wide[0]
    as_yaml = yaml.safe_load(orch("list", "-o", "yaml", "--limit", "2", home=jobs_home).stdout)
    as_json = json.loads(orch("list", "--json", "--limit", "2", home=jobs_home).stdout)
    assert [j["id"] for j in as_yaml] == [j["id"] for j in as_json] == ["job-2", "job-1"]


def test_status_yaml_and_watch_end_with_the_job(jobs_home):
    store = StateStore(f"sqlite:///{jobs_home / 'state.db'}")
    from orchestrator.lifecycle import JobState

    store.transition("job-1", JobState.QUEUED, JobState.CANCELLED, "cancelled by user")
    data = yaml.safe_load(orch("status", "job-1", "-o", "yaml", home=jobs_home).stdout)
    assert data["state"] == "cancelled" and [t["to_state"] for t in data["transitions"]] == ["queued", "cancelled"]
    proc = orch("status", "job-1", "--watch", "--interval", "0.2", home=jobs_home)  # returns: the job ended
    assert proc.returncode == 0 and "cancelled" in proc.stdout


# ---------------------------------------------------------------- config, version, completion


def test_config_file_supplies_the_profile(orch_home):
    (orch_home / "config.yaml").write_text("profile: local\n")
    proc = orch("validate", str(V3_SPEC), home=orch_home)
    assert proc.returncode == 0, proc.stderr
    assert "v3-local: valid" in proc.stdout and "--profile local" in proc.stdout


def test_config_file_errors_name_the_key(orch_home):
    (orch_home / "config.yaml").write_text("profle: local\naddress: 7\n")
    proc = orch("list", home=orch_home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "profle: unknown key" in proc.stderr and "address: must be a string" in proc.stderr


def test_version(orch_home):
    proc = orch("version", "--json", home=orch_home)
    data = json.loads(proc.stdout)
    assert data["orch"] == __import__("orchestrator").__version__ and data["ray"] and data["torch"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash")
@pytest.mark.parametrize(
    "words,want",
    [
        ("orch li", {"list"}),
        ("orch list -o ", {"table", "wide", "json", "yaml"}),
        ("orch logs --ta", {"--tail"}),
        ("orch submit --target ", {"local", "k8s"}),
    ],
)
def test_bash_completion_completes_commands_flags_and_choices(orch_home, words, want):
    script = orch("completion", "bash", home=orch_home).stdout
    line = words.split(" ")
    probe = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in line)}); COMP_CWORD={len(line) - 1}; _orch; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == want


def test_zsh_completion_is_the_bash_one_through_bashcompinit(orch_home):
    script = orch("completion", "zsh", home=orch_home).stdout
    assert "bashcompinit" in script and "complete -o default -F _orch orch" in script


# ---------------------------------------------------------------- logs


def write_log(home, job_id: str, lines: list[tuple[float, str]]) -> None:
    path = home / "jobs" / job_id / "job.log"
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} {text}\n" for at, text in lines))


def test_logs_are_human_by_default_raw_with_json(jobs_home):
    now = time.time()
    step = {"step": 12, "loss": 5.551234567890123, "tokens_per_s": 1234.5678901234, "step_time_s": 0.4123456789}
    write_log(
        jobs_home,
        "job-0",
        [
            (now - 600, "attempt 1 start-up: engine build at +41.0 s"),
            (now - 300, json.dumps(step)),
            (now - 5, "checkpoint committed at step 12"),
        ],
    )
    human = orch("logs", "job-0", home=jobs_home).stdout
    assert "step    12  loss 5.5512      1,235 tok/s    0.41 s/step" in human
    assert "start-up: engine build" in human and "checkpoint committed at step 12" in human
    assert "[test.event] event 0" in human  # the event log's lines are interleaved by time
    assert "5.551234567890123" not in human
    raw = orch("logs", "job-0", "--json", home=jobs_home).stdout
    assert json.dumps(step) in raw and "test.event" not in raw
    assert orch("logs", "job-0", "--tail", "1", home=jobs_home).stdout.strip().endswith("[test.event] event 0")
    since = orch("logs", "job-0", "--since", "7m", "--json", home=jobs_home).stdout.splitlines()
    assert len(since) == 2 and "engine build" not in since[0]


def test_logs_since_must_be_a_duration_or_a_time(jobs_home):
    proc = orch("logs", "job-0", "--since", "yesterday", home=jobs_home)
    assert proc.returncode == 2 and "--since" in proc.stderr and "fix:" in proc.stderr


def test_every_option_is_documented_with_its_default():
    from orchestrator.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    undocumented = [
        f"{name} {opt.option_strings[0]}"
        for name, command in commands.items()
        for opt in command._actions
        if opt.option_strings and not opt.help
    ]
    assert undocumented == []
    assert "(default: 8267)" in commands["dashboard"].format_help()
    assert "(default: 9400)" in commands["metrics"].format_help()
    assert "(default: 200)" in commands["events"].format_help()
    assert "random seed" in commands["simulate"].format_help()


def test_cost_text_has_pool_and_phase_views_and_names_an_unpriced_pool(jobs_home):
    from orchestrator.ledger.intervals import Interval
    from orchestrator.lifecycle import JobState

    store = StateStore(f"sqlite:///{jobs_home / 'state.db'}")
    store.transition("job-0", JobState.QUEUED, JobState.PLACING, "placed")
    rows = [
        Interval("job-0", 1, "node-3", "local-spare", "spare", 2, "cpu", "pre_training", category, start, end, 2.0)
        for category, start, end in (("startup", 0, 36), ("productive", 36, 360))
    ]
    store.transition(
        "job-0",
        JobState.PLACING,
        JobState.FAILED,
        "x",
        extra=lambda conn, now: store.insert_intervals(conn, "research", rows),
    )
    text = orch("cost", "job-0", home=jobs_home).stdout
    assert "startup 0.0200" in text and "productive 0.1800" in text
    assert (
        "pool local-spare (spare): 0.2000 device-hours, $0.400  (no price_per_gpu_hour: charged "
        "cost.price_per_gpu_hour $2)" in text
    )
    assert "phase pre_training: 0.2000 device-hours" in text
    assert "plan: 0.0020 device-hours" in text  # the static plan, apart from the measured hours
    data = json.loads(orch("cost", "job-0", "--json", home=jobs_home).stdout)
    assert data["unpriced_pools"] == ["local-spare"] and data["gpu_hours"]["startup"] == pytest.approx(2 * 36 / 3600)
