"""Many processes opening a fresh state database at once must all succeed.

The CLI, the controller actor and job runners open the store concurrently; before migrations were
serialised, two of them creating ``alembic_version`` at the same time made one fail (seen in CI).
"""

import multiprocessing as mp

from sqlalchemy import inspect


def _open(url: str, barrier, results) -> None:
    from orchestrator.state.store import StateStore

    barrier.wait()
    try:
        store = StateStore(url)
        store.insert_job(
            {
                "id": f"j-{mp.current_process().pid}",
                "name": "j",
                "team": "t",
                "priority": 0,
                "spec": {},
                "source": {},
                "world_size": 1,
                "nodes": 1,
                "devices_per_node": 1,
                "total_steps": 1,
            }
        )
        results.put("ok")
    except Exception as exc:  # the test reports what went wrong
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_open_migrates_once(state_url):
    """On SQLite (a file lock) and PostgreSQL (an advisory lock)."""
    url = state_url
    ctx = mp.get_context("spawn")
    count = 8
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * count

    from orchestrator.state.store import StateStore

    store = StateStore(url)
    assert {"jobs", "ledger_intervals", "alembic_version"} <= set(inspect(store.engine).get_table_names())
    assert len(store.list_jobs()) == count
