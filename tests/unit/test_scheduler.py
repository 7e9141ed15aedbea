"""The pure scheduler: gangs, pools, quotas, priorities, preemption and the reasons a job waits."""

from __future__ import annotations

from orchestrator.cluster.placement import JobView, NodeView, capacity_problem, schedule


def nodes(spec: str, devices: int = 8) -> list[NodeView]:
    """'od:3,spot:2,spare:1' -> nodes od-0.. in those pools."""
    out = []
    for part in spec.split(","):
        pool, count = part.split(":")
        kind = {"od": "on-demand", "spot": "spot", "spare": "spare"}[pool]
        out += [NodeView(f"{pool}-{i}", pool, kind, devices) for i in range(int(count))]
    return out


def job(id, n, priority=0, at=0.0, team="t", pools=("od", "spot"), assigned=()):
    return JobView(id, team, priority, at, n, 8, pools, tuple(assigned))


def test_a_gang_gets_whole_nodes_in_pool_order():
    d = schedule([job("a", 3)], [], nodes("spot:2,od:2"))
    assert d.place[0].nodes == ("od-0", "od-1", "spot-0")  # the spec's pool order first, then by name


def test_all_or_nothing_and_the_reason_has_numbers():
    d = schedule([job("a", 5)], [], nodes("od:2,spot:2,spare:1"))
    assert not d.place and "needs 5 free node(s)" in d.wait[0].reason and "4 free of 4" in d.wait[0].reason


def test_spares_cordons_and_dead_nodes_are_not_used():
    pool = nodes("od:3")
    pool[0] = NodeView("od-0", "od", "on-demand", 8, cordoned=True)
    pool[1] = NodeView("od-1", "od", "on-demand", 8, alive=False)
    assert schedule([job("a", 1)], [], pool + nodes("spare:2")).place[0].nodes == ("od-2",)


def test_priority_then_submission_order_and_no_backfill_past_a_waiting_job():
    d = schedule([job("low", 1, 0, at=1), job("high", 3, 5, at=2), job("later", 1, 0, at=3)], [], nodes("od:2"))
    assert [p.job_id for p in d.place] == []  # high waits for 3 nodes; nobody jumps ahead onto its nodes
    assert {w.job_id for w in d.wait} == {"low", "high", "later"}


def test_team_quota():
    d = schedule(
        [job("a", 2, team="small")], [job("r", 1, team="small", assigned=["od-0"])], nodes("od:4"), quotas={"small": 16}
    )
    assert not d.place and "quota: 8 of 16 devices in use, job needs 16" in d.wait[0].reason


def test_preemption_of_lower_priority_frees_exactly_enough():
    running = [
        job("old-low", 1, 0, at=1, assigned=["od-0"]),
        job("new-low", 1, 0, at=2, assigned=["od-1"]),
        job("mid", 1, 3, at=0, assigned=["spot-0"]),
    ]
    d = schedule([job("urgent", 2, 9, at=5)], running, nodes("od:2,spot:1"))
    assert d.preempt[0].victims == ("new-low", "old-low")  # lowest priority, newest first; not "mid"
    assert not d.place and "preempting" in d.wait[0].reason


def test_no_preemption_of_equal_priority():
    d = schedule([job("b", 1, 0, at=5)], [job("a", 1, 0, at=1, assigned=["od-0"])], nodes("od:1"))
    assert not d.preempt and not d.place


def test_capacity_problem_for_a_job_that_can_never_fit():
    assert "the cluster has 2" in capacity_problem(job("big", 256), nodes("od:2"))
    assert capacity_problem(job("ok", 2), nodes("od:2")) is None


def test_placing_256_nodes():
    d = schedule([job("v3", 256)], [], nodes("od:256"))
    assert len(d.place[0].nodes) == 256 and len(set(d.place[0].nodes)) == 256


def test_only_a_recovering_job_may_take_a_spare():
    pool = nodes("od:1,spare:1")
    assert not schedule([job("fresh", 2)], [], pool).place
    recovering = job("back", 2, pools=("od", "spot", "spare"))
    assert schedule([recovering], [], pool).place[0].nodes == ("od-0", "spare-0")


def test_many_queued_jobs_over_shared_pools_get_disjoint_nodes_in_order():
    cluster = nodes("od:6,spot:6")
    queue = [job(f"both{i}", 2, at=i) for i in range(3)] + [
        job(f"spot{i}", 2, at=10 + i, pools=("spot",)) for i in range(3)
    ]
    d = schedule(queue, [], cluster)
    placed = {p.job_id: p.nodes for p in d.place}
    assert placed["both0"] == ("od-0", "od-1") and placed["both2"] == ("od-4", "od-5")
    assert placed["spot0"] == ("spot-0", "spot-1") and placed["spot2"] == ("spot-4", "spot-5")
    taken = [n for p in d.place for n in p.nodes]
    assert len(taken) == len(set(taken)) == 12
    # one more job on each lane waits, with the numbers of what is left
    d = schedule(queue + [job("late", 1, at=99, pools=("spot",))], [], cluster)
    assert [w.job_id for w in d.wait] == ["late"] and "0 free of 6" in d.wait[0].reason


def test_among_equal_priorities_the_job_with_the_freshest_checkpoint_is_preempted():
    # both low jobs are priority 0; "stale" is the newer one (the old tie-break) but would lose an hour
    running = [job("fresh", 1, 0, at=1, assigned=["od-0"]), job("stale", 1, 0, at=2, assigned=["od-1"])]
    running = [JobView(**{**r.__dict__, "unsaved_s": s}) for r, s in zip(running, (60.0, 3600.0))]
    d = schedule([job("urgent", 1, 9, at=5)], running, nodes("od:2"))
    assert d.preempt[0].victims == ("fresh",)
    # the order is by work lost: a fresher checkpoint on a gang four times larger can lose more
    big = JobView("big", "t", 0, 1, 4, 8, ("od", "spot"), ("od-0", "od-1", "od-2", "od-3"), unsaved_s=1000.0)
    small = JobView("small", "t", 0, 2, 1, 8, ("od", "spot"), ("od-4",), unsaved_s=3000.0)
    d = schedule([job("urgent", 1, 9, at=5)], [big, small], nodes("od:5"))
    assert d.preempt[0].victims == ("small",)
    # priority still comes first: a lower priority goes before a fresher checkpoint
    lowest = JobView("lowest", "t", -1, 1, 1, 8, ("od", "spot"), ("od-0",), unsaved_s=9000.0)
    low = JobView("low", "t", 0, 2, 1, 8, ("od", "spot"), ("od-1",), unsaved_s=0.0)
    assert schedule([job("urgent", 1, 9, at=5)], [low, lowest], nodes("od:2")).preempt[0].victims == ("lowest",)
