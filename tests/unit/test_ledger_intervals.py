"""The ledger's arithmetic on event sequences whose hours were computed by hand."""

from __future__ import annotations

import pytest

from orchestrator.ledger.intervals import Attempt, NodeHold, StepRecord, attempt_intervals, summarize

NODES = (NodeHold("n1", "od", "on-demand", 2, 2.0), NodeHold("n2", "spot", "spot", 2, 0.8))


def attempt(ending, steps, attempt_no=1, held=(0.0, 100.0), committed=None):
    return Attempt("job", attempt_no, held[0], held[1], ending, tuple(steps), committed, "cpu", NODES, "pre")


def step(n, end, time=10.0, stall=0.0, phase="pre"):
    return StepRecord(n, end, time, stall, phase)


def hours(summary, category):
    return summary["gpu_hours"][category]


def test_a_clean_run_by_hand():
    # held 0-100 s: gang start 0-20, steps 20-30 .. 70-80 (the one ending at 50 stalls 2 s), final save 80-100
    steps = [step(1, 30), step(2, 40), step(3, 52, stall=2.0), step(4, 62), step(5, 72), step(6, 80, time=8)]
    s = summarize(attempt_intervals(attempt("succeeded", steps)))
    assert hours(s, "startup") == pytest.approx(4 * 20 / 3600)
    assert hours(s, "checkpoint") == pytest.approx(4 * (2 + 20) / 3600)
    assert hours(s, "productive") == pytest.approx(4 * (80 - 20 - 2) / 3600)
    assert s["gpu_hours"]["total"] == pytest.approx(4 * 100 / 3600)  # exactly devices x held time
    # priced per pool: 2 devices at $2 and 2 at $0.80 for 100 s
    assert s["cost_usd"] == pytest.approx((2 * 2.0 + 2 * 0.8) * 100 / 3600)
    assert s["by_pool"]["spot"]["gpu_hours"] == pytest.approx(2 * 100 / 3600)
    assert s["goodput"] == pytest.approx(58 / 100)


def test_lost_work_since_the_last_checkpoint():
    # checkpoint committed at step 2; the node dies after step 4 (at 60); release at 75
    steps = [step(1, 30), step(2, 40), step(3, 50), step(4, 60)]
    s = summarize(attempt_intervals(attempt("lost", steps, held=(0.0, 75.0), committed=2)))
    # steps 3 and 4, and step 5 that was under way (one step's time, 60-70)
    assert hours(s, "lost") == pytest.approx(4 * 30 / 3600)
    assert hours(s, "productive") == pytest.approx(4 * 20 / 3600)  # steps 1 and 2
    assert hours(s, "recovery") == pytest.approx(4 * 5 / 3600)  # the rest until the release
    assert hours(s, "startup") == pytest.approx(4 * 20 / 3600)
    assert s["gpu_hours"]["total"] == pytest.approx(4 * 75 / 3600)


def test_a_folded_record_counts_one_step_under_way():
    # the simulator folds steps 1-10 (2 s each) into one record ending at 40; released at 50: one step's
    # time (40-42) is the step under way, lost; the rest (42-50) is recovery
    folded = StepRecord(10, 40.0, 20.0, 0.0, "pre", steps_folded=10)
    s = summarize(attempt_intervals(attempt("lost", [folded], held=(0.0, 50.0), committed=10)))
    assert hours(s, "lost") == pytest.approx(4 * 2 / 3600) and hours(s, "recovery") == pytest.approx(4 * 8 / 3600)


def test_an_attempt_lost_before_its_first_commit_loses_every_step():
    # no checkpoint ever committed (None): the restart trains steps 1-3 again, so none was productive
    steps = [step(1, 30), step(2, 40), step(3, 50)]
    s = summarize(attempt_intervals(attempt("lost", steps, held=(0.0, 55.0), committed=None)))
    assert hours(s, "productive") == 0.0
    assert hours(s, "lost") == pytest.approx(4 * 35 / 3600)  # and the 5 s of step 4 under way at the loss
    assert s["gpu_hours"]["total"] == pytest.approx(4 * 55 / 3600)


def test_a_restart_counts_its_start_up_as_recovery_and_nothing_twice():
    lost = attempt_intervals(attempt("lost", [step(1, 30), step(2, 40)], held=(0.0, 45.0), committed=1))
    again = attempt_intervals(
        attempt("succeeded", [step(2, 80), step(3, 90)], attempt_no=2, held=(50.0, 95.0), committed=1)
    )
    s = summarize(lost + again)
    assert hours(s, "recovery") == pytest.approx(4 * 20 / 3600)  # 50-70: the restart's start-up
    assert hours(s, "lost") == pytest.approx(4 * (10 + 5) / 3600)  # step 2 of attempt 1, and step 3 under way
    assert hours(s, "productive") == pytest.approx(4 * (10 + 20) / 3600)
    assert s["gpu_hours"]["total"] == pytest.approx(4 * (45 + 45) / 3600)  # the 45-50 gap held nothing
    intervals = sorted(lost + again, key=lambda i: (i.node, i.start))
    for a, b in zip(intervals, intervals[1:]):
        assert a.node != b.node or a.end <= b.start + 1e-9  # no overlap on a node


def test_steps_kept_by_an_attempt_that_the_next_could_not_resume_from_are_lost_when_trained_again():
    # attempt 1 committed step 2 (in peer memory only) and was lost; attempt 2 found no copy and resumed
    # from step 0 (redo_until 2): its steps 1 and 2 were booked productive by attempt 1 already
    lost = attempt_intervals(attempt("lost", [step(1, 30), step(2, 40)], held=(0.0, 45.0), committed=2))
    again = Attempt(
        "job", 2, 50.0, 115.0, "succeeded", (step(1, 80), step(2, 90), step(3, 100)), 2, "cpu", NODES, "pre", 2
    )
    s = summarize(lost + attempt_intervals(again))
    assert hours(s, "productive") == pytest.approx(4 * (10 + 10 + 10) / 3600)  # steps 1, 2 (attempt 1) and 3
    assert hours(s, "lost") == pytest.approx(4 * (5 + 20) / 3600)  # step 3 under way at the loss (to 45); 1, 2 again


def test_preemption_with_a_save_loses_nothing():
    steps = [step(1, 30), step(2, 40)]
    s = summarize(attempt_intervals(attempt("checkpointed", steps, held=(0.0, 52.0), committed=2)))
    assert hours(s, "lost") == 0 and hours(s, "checkpoint") == pytest.approx(4 * 12 / 3600)


def test_a_notice_stop_whose_save_committed_loses_nothing():
    # a node's notice: checkpoint at step 2 (save 40-52), then the attempt stops to restart elsewhere
    steps = [step(1, 30), step(2, 40)]
    s = summarize(attempt_intervals(attempt("stopped", steps, held=(0.0, 52.0), committed=2)))
    assert hours(s, "lost") == 0 and hours(s, "recovery") == 0
    assert hours(s, "checkpoint") == pytest.approx(4 * 12 / 3600)


def test_a_notice_stop_whose_save_was_abandoned_loses_the_steps_since_the_last_commit():
    # the emergency save could not commit before the deadline: steps 3-4 are trained again, none was under way
    steps = [step(1, 30), step(2, 40), step(3, 50), step(4, 60)]
    s = summarize(attempt_intervals(attempt("stopped", steps, held=(0.0, 70.0), committed=2)))
    assert hours(s, "lost") == pytest.approx(4 * 20 / 3600)
    assert hours(s, "checkpoint") == pytest.approx(4 * 10 / 3600)
    assert s["gpu_hours"]["total"] == pytest.approx(4 * 70 / 3600)


def test_phases_are_kept_apart():
    steps = [step(1, 30, phase="pre"), step(2, 40, phase="pre"), step(3, 50, phase="ext")]
    s = summarize(attempt_intervals(attempt("succeeded", steps, held=(0.0, 50.0))))
    assert s["by_phase"]["ext"] == pytest.approx(4 * 10 / 3600)
    assert s["by_phase"]["pre"] == pytest.approx(4 * 40 / 3600)


def test_an_attempt_that_never_stepped():
    s = summarize(attempt_intervals(attempt("failed", [], held=(0.0, 30.0))))
    assert hours(s, "lost") == pytest.approx(4 * 30 / 3600) and s["goodput"] == 0


def test_two_jobs_trading_nodes_through_a_preemption_are_not_double_counted():
    # job A holds n1+n2 from 0 s, is preempted and saves by 50 s; job B takes n1+n2 from 55 s to 100 s;
    # A comes back at 110 s on n1+n2 and finishes at 160 s.
    a1 = Attempt("A", 1, 0.0, 50.0, "checkpointed", (step(1, 20), step(2, 40)), 2, "cpu", NODES, "pre")
    b1 = Attempt("B", 1, 55.0, 100.0, "succeeded", (step(1, 75), step(2, 95)), 2, "cpu", NODES, "pre")
    a2 = Attempt("A", 2, 110.0, 160.0, "succeeded", (step(3, 130), step(4, 150)), 2, "cpu", NODES, "pre")
    intervals = attempt_intervals(a1) + attempt_intervals(b1) + attempt_intervals(a2)
    s = summarize(intervals)
    assert s["gpu_hours"]["total"] == pytest.approx(4 * (50 + 45 + 50) / 3600)
    assert s["gpu_hours"]["lost"] == 0  # A saved before giving its nodes up
    assert s["gpu_hours"]["recovery"] == pytest.approx(4 * 10 / 3600)  # A's second start-up, 110-120
    assert s["gpu_hours"]["startup"] == pytest.approx(4 * (10 + 10) / 3600)  # A 0-10 and B 55-65
    per_node = {}
    for i in sorted(intervals, key=lambda i: i.start):
        assert i.start >= per_node.get(i.node, 0.0) - 1e-9  # nothing overlaps on a node, whichever job
        per_node[i.node] = i.end


def test_folding_nodes_into_pools_keeps_every_figure():
    nodes = NODES + (NodeHold("n3", "od", "on-demand", 2, 2.0), NodeHold("n4", "od", "on-demand", 2, 1.5))
    a = Attempt("job", 2, 0.0, 75.0, "lost", (step(1, 30), step(2, 40), step(3, 50)), 2, "cpu", nodes, "pre")
    per_node, per_pool = attempt_intervals(a), attempt_intervals(a, by_pool=True)
    assert len(per_pool) < len(per_node)
    assert {i.node for i in per_pool} == {"pool:od", "pool:spot"}
    # n4 is in pool od at another price: it stays apart so dollars are kept
    assert sorted(i.devices for i in per_pool if i.category == "lost") == [2, 2, 4]
    a_node, a_pool = summarize(per_node), summarize(per_pool)
    for category in ("total", "productive", "lost", "recovery"):
        assert a_pool["gpu_hours"][category] == pytest.approx(a_node["gpu_hours"][category])
    assert a_pool["cost_usd"] == pytest.approx(a_node["cost_usd"])
    assert a_pool["by_pool"]["od"]["cost_usd"] == pytest.approx(a_node["by_pool"]["od"]["cost_usd"])
