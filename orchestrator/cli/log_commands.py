"""`orch logs JOB`: the job's log for people (steps, checkpoints, start-up and state lines), or raw.

The runner writes the job log (``ORCH_HOME/jobs/ID/job.log``): a time stamp, then text or one JSON
object per step. The default view turns step objects into aligned words and interleaves the
controller's state changes from the event log by time; ``--json`` prints the file as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass

from orchestrator.control.client import ControlPlane
from orchestrator.errors import FieldProblem, ProblemListError
from orchestrator.lifecycle import JobState

STAMP = "%Y-%m-%d %H:%M:%S"
STAMP_LEN = 19
# in the job log already (the runner writes them): not repeated from the event log
LOGGED_KINDS = ("job.startup", "checkpoint.committed", "checkpoint.emergency", "job.submitted")


class LogsArgumentError(ProblemListError):
    title = "invalid arguments"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        help="a job's log: steps, checkpoints, start-up and state changes",
        description="A job's log for people: one line per step (loss, tokens/s, step time), "
        "checkpoints, start-up phases and state changes. --json prints the raw log.",
    )
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.add_argument("--json", action="store_true", help="the raw log as the runner wrote it")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines (default: all)")
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="only lines from this long ago (30s, 10m, 2h, 1d) or since a time (HH:MM[:SS], or YYYY-MM-DD HH:MM[:SS])",
    )
    p.set_defaults(func=cmd_logs)


@dataclass(frozen=True)
class Line:
    at: float
    text: str  # as written, time stamp included
    raw: bool  # a line of the job log (not an event)


def parse_since(text: str | None, now: float) -> float | None:
    """Epoch seconds from ``30s``/``10m``/``2h``/``1d`` ago or a local ``HH:MM[:SS]``/date-time."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match:
        return now - float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%H:%M:%S", "%H:%M"):
        try:
            parsed = time.strptime(text.strip(), fmt)
        except ValueError:
            continue
        if fmt.startswith("%H"):
            today = time.localtime(now)
            parsed = time.struct_time(
                (today.tm_year, today.tm_mon, today.tm_mday, parsed.tm_hour, parsed.tm_min, parsed.tm_sec, 0, 0, -1)
            )
        return time.mktime(parsed)
    raise LogsArgumentError(
        [
            FieldProblem(
                "--since",
                "is neither a duration nor a time",
                text,
                fix="e.g. --since 10m, --since 2h, --since 14:05, --since '2026-11-28 14:05'",
            )
        ]
    )


def stamp_of(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text[:STAMP_LEN], STAMP))
    except ValueError:
        return None


def humanize(text: str) -> str:
    """A step object as words (``step 12  loss 5.551  1,234 tok/s  0.41 s/step``); other lines as written."""
    body = text[STAMP_LEN + 1 :]
    if not body.startswith("{"):
        return text
    try:
        m = json.loads(body)
    except ValueError:
        return text
    if not isinstance(m, dict) or "step" not in m:
        return text
    words = [f"step {m['step']:>5}"]
    if m.get("loss") is not None:
        words.append(f"loss {m['loss']:.4f}")
    if m.get("tokens_per_s") is not None:
        words.append(f"{m['tokens_per_s']:>9,.0f} tok/s")
    if m.get("step_time_s") is not None:
        words.append(f"{m['step_time_s']:6.2f} s/step")
    if m.get("global_batch") is not None:
        words.append(f"batch {m['global_batch']}")
    if m.get("expert_imbalance") is not None:
        words.append(f"expert imbalance {m['expert_imbalance']:.2f}")
    return f"{text[:STAMP_LEN]} " + "  ".join(words)


def read_lines(plane: ControlPlane, job_id: str, position: int) -> tuple[list[Line], int]:
    """The job log's complete lines from byte ``position``; and the position after them."""
    path = plane.log_path(job_id)
    if not path.exists():
        return [], position
    with open(path, "rb") as f:
        f.seek(position)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
    lines, last = [], 0.0
    for raw in chunk[:end].decode(errors="replace").splitlines():
        at = stamp_of(raw)
        last = at if at is not None else last  # a traceback's lines go with the line before
        lines.append(Line(last, raw, True))
    return lines, position + end


def event_lines(plane: ControlPlane, job_id: str, after_id: int) -> tuple[list[Line], int]:
    events = plane.store.events(job_id, after_id=after_id, limit=10**9)
    lines = [
        Line(e["at"], f"{time.strftime(STAMP, time.localtime(e['at']))} [{e['kind']}] {_strip(e)}", False)
        for e in events
        if e["kind"] not in LOGGED_KINDS
    ]
    return lines, (events[-1]["id"] if events else after_id)


def _strip(event: dict) -> str:
    prefix = f"{event['job_id']}: "
    return event["message"][len(prefix) :] if event["message"].startswith(prefix) else event["message"]


def cmd_logs(args: argparse.Namespace) -> int:
    plane = ControlPlane()
    job = plane.store.get_job(args.job)
    since = parse_since(args.since, time.time())
    position, after_id, first = 0, 0, True
    while True:
        ended = JobState(plane.store.get_job(job["id"])["state"]).is_terminal  # before reading: nothing missed
        logged, position = read_lines(plane, job["id"], position)
        events: list[Line] = []
        if not args.json:
            events, after_id = event_lines(plane, job["id"], after_id)
        lines = sorted(logged + events, key=lambda line: line.at)  # stable: a log's own order is kept
        if since is not None:
            lines = [line for line in lines if line.at >= since]
        if first and args.tail is not None:
            lines = lines[-args.tail :] if args.tail > 0 else []
        for line in lines:
            sys.stdout.write((line.text if args.json or not line.raw else humanize(line.text)) + "\n")
        sys.stdout.flush()
        if first and not lines and not plane.log_path(job["id"]).exists() and not args.follow:
            print(f"no log yet for {job['id']} (state {job['state']})")
        first = False
        if not args.follow or ended:
            return 0
        time.sleep(1)
