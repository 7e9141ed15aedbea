"""The discrete-event loop: interruptions, notices, replacements and attempt progress on a
simulated clock, with the real ``ControllerCore`` reconciling after every event.

Events are popped in time order; before each, the running attempt is advanced to that time (it
may finish first). Interruptions are Poisson per pool (rate x nodes) or replayed from a trace; a
node with a notice window is cordoned when the notice arrives, and the attempt on it saves and
stops if the save can commit before the node goes; an interrupted node's replacement joins after
the provisioning delay. The state store is an in-memory SQLite database migrated like any other.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from orchestrator.clock import ManualClock
from orchestrator.control.controller import ControllerCore
from orchestrator.control.notices import handle_notice
from orchestrator.control.rows import job_row
from orchestrator.ledger.intervals import summarize
from orchestrator.lifecycle import Directive, JobState
from orchestrator.plan import reference
from orchestrator.plan.costs import scenario_costs
from orchestrator.plan.planner import make_plan
from orchestrator.plan.scenario import Scenario, apply_scenario
from orchestrator.plan.storage import GIB, HOURS_PER_MONTH, Checkpointing, get_requests, put_requests
from orchestrator.plan.timeline import StepTimeline, build_timeline
from orchestrator.simulate.cluster import SimulatedCluster
from orchestrator.simulate.launcher import SimulatedLauncher
from orchestrator.spec.schema import JobSpec
from orchestrator.state.store import EventRecord, StateStore

DAY = 86400.0
WAITING = (JobState.QUEUED, JobState.RECOVERING, JobState.PREEMPTED)


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str  # interrupt | notice | replace | ready
    node: str = ""
    pool: str = ""
    goes_at: float = 0.0


class Simulation:
    def __init__(
        self,
        spec: JobSpec,
        scenario: Scenario,
        timeline: StepTimeline | None = None,
        state_url: str = "sqlite://",
        start_at: float = 0.0,
    ):
        self.scenario = scenario
        self.spec = apply_scenario(spec, scenario)
        self.plan = make_plan(self.spec)
        self.timeline = timeline or build_timeline(self.plan)
        self.costs = scenario_costs(self.plan, scenario)
        self.clock = ManualClock(start_at)
        # in memory by default; a file keeps the simulated run for `orch list`, `orch cost`, the dashboard
        self.store = StateStore(state_url, clock=self.clock, share_decoded_specs=state_url == "sqlite://")
        self.cluster = SimulatedCluster(self.spec, start_at)
        self.cluster.clock_now = self.clock.now
        self.cluster.on_provision = lambda name: self._push(
            self.clock.now() + self.scenario.provision_delay_s, "replace", node=name
        )
        self.launcher = SimulatedLauncher(
            self.store,
            self.clock,
            self.spec,
            self.timeline,
            self.costs,
            self._ready,
            lambda at: self._push(at, "stopped"),
            self.cluster.nodes_by_name,
        )
        self.controller = ControllerCore(self.store, self.cluster, self.launcher, self.clock, ledger_by_pool=True)
        self.rng = np.random.default_rng(scenario.seed)
        self.events: list[_Event] = []
        self.seq = itertools.count()
        self.counts = {"interruptions": 0, "hit_job": 0, "saved_on_notice": 0, "replacements": 0}
        planned = self.plan.total_days * DAY
        self.horizon = start_at + ((scenario.max_days * DAY) if scenario.max_days else 20 * planned + 30 * DAY)

    # ------------------------------------------------------------------ events

    def _push(self, at: float, kind: str, **fields) -> None:
        heapq.heappush(self.events, _Event(at, next(self.seq), kind, **fields))

    def _ready(self, at: float) -> None:
        self._push(at, "ready")

    def _schedule_interruption(self, pool: str, after: float) -> None:
        members = self.cluster.pools[pool]
        rate = members[0].interruptions_per_day * len(members) / DAY
        goes = after + self.rng.exponential(1.0 / rate)
        node = members[int(self.rng.integers(len(members)))]
        notice = self.cluster.notice_seconds(node.name)
        if notice > 0:
            self._push(max(after, goes - notice), "notice", node=node.name, pool=pool, goes_at=goes)
        self._push(goes, "interrupt", node=node.name, pool=pool)

    def _seed_interruptions(self, start: float) -> None:
        """Trace times are seconds from the start of the run."""
        if self.scenario.trace is not None:
            for offset, where in self.scenario.trace:
                at = start + offset
                name = where
                if where in self.cluster.pools:  # a pool: one of its nodes at random
                    members = self.cluster.pools[where]
                    name = members[int(self.rng.integers(len(members)))].name
                notice = self.cluster.notice_seconds(name)
                if notice:
                    self._push(max(start, at - notice), "notice", node=name, goes_at=at)
                self._push(at, "interrupt", node=name)
            return
        for pool, members in self.cluster.pools.items():
            if members and members[0].interruptions_per_day > 0:
                self._schedule_interruption(pool, start)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        began = time.perf_counter()
        plan = self.plan
        job_id = self.store.insert_job(
            job_row(f"{self.spec.name}-sim", plan, {"simulate": True}),
            [EventRecord("job.submitted", f"{self.spec.name}-sim: submitted to the simulator")],
        )
        self._seed_interruptions(self.clock.now())
        self.controller.reconcile()
        while not self.store.job_state(job_id).is_terminal:
            upcoming = self.events[0].at if self.events else math.inf
            if min(upcoming, self.horizon) == math.inf and not self.launcher.attempts:
                break  # nothing will ever happen again (the gang cannot be placed)
            finished = self._advance_attempts(min(upcoming, self.horizon))
            if finished:
                continue
            if upcoming > self.horizon:
                self.clock.set(max(self.clock.now(), self.horizon))
                break
            event = heapq.heappop(self.events)
            self.clock.set(max(self.clock.now(), event.at))
            self._handle(event)
            if event.kind != "replace" or self.store.job_state(job_id) in WAITING:
                self.controller.reconcile()  # a node joining changes nothing for a job that holds its gang
            else:
                self.controller.record_nodes(self.cluster.nodes())  # but the node history records it now
        return self._result(self.store.get_job(job_id), time.perf_counter() - began)

    def flush_running(self) -> None:
        """After ``run`` stopped at ``max_days``: write what the running attempt has done so far, as a
        real runner's periodic flush does (the simulator otherwise writes it when the attempt ends),
        so ``orch forecast`` can read the run mid-way. Not for a simulation that goes on."""
        for run in self.launcher.running():
            if run.outcome is None:
                self.store.add_metrics(run.job_id, run.attempt, run.step_records())
                self.store.record_checkpoint(run.job_id, run.committed or None, announce=False)

    def _advance_attempts(self, until: float) -> bool:
        for run in self.launcher.running():
            if run.outcome is None:
                finished = run.advance(until)
                if finished is not None:
                    self.clock.set(max(self.clock.now(), finished))
                    self.launcher.record(run)
                    self.controller.reconcile()
                    return True
        return False

    def _handle(self, event: _Event) -> None:
        now = self.clock.now()
        if event.kind == "interrupt":
            if event.pool and self.scenario.trace is None:
                self._schedule_interruption(event.pool, now)
            if not self.cluster.fail(event.node, now):
                return  # already gone: thinning keeps the process Poisson per live node
            self.counts["interruptions"] += 1
            self.store.add_event("node.lost", f"{event.node}: interrupted", data={"node": event.node})
            self._push(now + self.scenario.provision_delay_s, "replace", node=event.node)
            self.cluster.pending[event.node] = self.cluster.nodes_by_name[event.node].pool
            for run in self.launcher.running():
                if event.node in run.nodes and run.outcome is None:  # (a stop under way is lost too)
                    self.counts["hit_job"] += 1
                    run.advance(now)
                    run.lose(now, f"node {event.node} was interrupted")
                    self.launcher.record(run)
        elif event.kind == "notice":
            node = self.cluster.nodes_by_name[event.node]
            if not node.alive:
                return
            self.cluster.cordon(event.node)
            saved_before = self.counts["saved_on_notice"]
            handle_notice(
                self.store,
                event.node,
                event.goes_at,
                "spot interruption notice",
                "simulator",
                lambda job, directive, deadline: self._save_on_notice(job, deadline),
            )
            if self.counts["saved_on_notice"] == saved_before:
                self.store.add_event(
                    "node.notice",
                    f"{event.node}: too short for a save; work since the last checkpoint will be lost",
                    data={"node": event.node},
                )
        elif event.kind == "stopped":
            for run in self.launcher.running():
                if run.pending_stop is not None and run.pending_stop["ends"] <= now:
                    run.complete_stop()
                    self.launcher.record(run)
        elif event.kind == "replace":
            self.cluster.replace(event.node, now)
            if event.node in self.store.cordoned_nodes():
                self.store.set_cordon(event.node, False, "replaced: a new node under the same name", "simulator")
            self.counts["replacements"] += 1
        # "ready": the reconcile that follows moves the job to running

    def _save_on_notice(self, job: dict, deadline: float) -> None:
        """The runner's side of a notice: save the step in progress and stop, if it commits in time."""
        if self.launcher.request(self.store.job(job["id"]), Directive.CHECKPOINT_STOP, deadline):
            self.counts["saved_on_notice"] += 1
            self.counts["hit_job"] += 1  # it hit the job, which saved its work (its run stops: not counted twice)

    # ------------------------------------------------------------------ the answer

    def _storage(self, job: dict, days: float) -> dict:
        return storage_figures(self.spec, self.costs.checkpoint_bytes, self.launcher.saves, job["restarts"], days)

    def _result(self, job: dict, wall_s: float) -> dict:
        now = self.clock.now()
        ledger = summarize(self.store.intervals(job["id"]))
        bill = self.cluster.bill(now)
        plan_hours, plan_cost = self.plan.total_gpu_hours, self.plan.total_cost_usd
        ref = reference.reference_summary()
        days = ((job["ended_at"] or now) - job["submitted_at"]) / DAY
        return {
            "job": job["id"],
            "state": job["state"],
            "message": job["message"],
            "failure_reason": job["failure_reason"],
            "seed": self.scenario.seed,
            "steps": job["step"],
            "total_steps": self.timeline.total_steps,
            "days": days,
            "gpu_hours": ledger["gpu_hours"],
            "goodput": ledger["goodput"],
            "by_phase": ledger["by_phase"],
            "cost_usd": ledger["cost_usd"],
            "by_pool": ledger["by_pool"],
            "cluster_bill": {
                **bill,
                "idle_gpu_hours": bill["gpu_hours"] - ledger["gpu_hours"]["total"],
                "idle_cost_usd": bill["cost_usd"] - ledger["cost_usd"],
            },
            "storage": self._storage(job, days),
            "utilisation": self.cluster.utilisation(now, {p: v["gpu_hours"] for p, v in ledger["by_pool"].items()}),
            "wall_goodput": (
                ledger["gpu_hours"]["productive"] / (self.plan.mesh.world_size * days * 24) if days else 0.0
            ),
            "interruptions": self.counts["interruptions"],
            "interruptions_hitting_job": self.counts["hit_job"],
            "saved_on_notice": self.counts["saved_on_notice"],
            "restarts": job["restarts"],
            "checkpoints": {**self.costs.as_dict(), "saves": self.launcher.saves},
            "plan": {"gpu_hours": plan_hours, "cost_usd": plan_cost, "days": self.plan.total_days},
            "vs_plan": ledger["gpu_hours"]["total"] / plan_hours if plan_hours else None,
            "reference": {"gpu_hours": ref["gpu_hours"], "cost_usd": ref["cost_usd"]} if ref else None,
            "scenario": {k: v for k, v in self.scenario.__dict__.items() if k != "trace"},
            "pools": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "nodes": p.nodes,
                    "price_per_gpu_hour": self.spec.pool_price(p),
                    "interruptions_per_node_day": p.interruptions_per_node_day,
                    "notice_seconds": p.notice_seconds,
                }
                for p in self.spec.resources.pools
            ],
            "simulated_in_s": wall_s,
        }


def storage_figures(spec: JobSpec, checkpoint_bytes: float, saves: int, restarts: int, days: float) -> dict:
    """The run's storage lines (plan/storage.py prices): every save's PUTs, every restore's GETs, and
    ``keep_last`` checkpoints stored for the whole run (``keep_every`` ones are left out: time-based
    saves seldom land on its multiples)."""
    prices = spec.cost.storage
    ck = Checkpointing(checkpoint_bytes, spec.resources.nodes * spec.resources.gpus_per_node, spec.checkpoint.retention)
    puts, gets = put_requests(ck, prices) * saves, get_requests(ck, prices) * restarts
    gib_months = spec.checkpoint.retention.keep_last * checkpoint_bytes / GIB * days * 24 / HOURS_PER_MONTH
    lines = {
        "checkpoint_storage": {"gib_months": gib_months, "cost_usd": gib_months * prices.gb_month_usd},
        "checkpoint_puts": {"requests": puts, "cost_usd": puts / 1000 * prices.put_per_1000_usd},
        "checkpoint_restores": {"requests": gets, "cost_usd": gets / 1000 * prices.get_per_1000_usd},
    }
    return {**lines, "cost_usd": sum(line["cost_usd"] for line in lines.values())}


def simulate(spec: JobSpec, scenario: Scenario, timeline: StepTimeline | None = None) -> dict:
    return Simulation(spec, scenario, timeline).run()
