"""Cluster utilisation per pool, like Slurm's ``sreport cluster utilization``: of the node-hours each
pool's nodes were up, how many were allocated to jobs (the ledger), and how many were idle (or, in a
spare pool, standing by as spares); beside them the node-hours nodes were down or being replaced.
Each is priced, so a job's share of the bill (its allocation) is distinct from the cluster's idle cost.

Up and down time come from ``node_history`` (the controller records every change between up,
cordoned, down and gone); allocation from the ledger's device-hours per pool. The simulator's
``SimCluster.utilisation`` computes the same figures from its own node bookkeeping, and the tests
check that both agree on a simulated run.
"""

from __future__ import annotations

from orchestrator.ledger.report import cost_report
from orchestrator.lifecycle import NodeState
from orchestrator.state.store import StateStore

UP = (NodeState.UP.value, NodeState.CORDONED.value)


def node_seconds(history: list[dict], now: float) -> dict[str, dict]:
    """Per pool: device-seconds up, cordoned and down, its kind and devices per node, from the
    changes (oldest first). A node's state holds from its change to its next one (or ``now``). A
    node listed before it ever came up (a new node being provisioned) is not down yet: down is a
    node that was up and is lost or waiting for its replacement."""
    by_node: dict[str, list[dict]] = {}
    for row in history:
        by_node.setdefault(row["name"], []).append(row)
    pools: dict[str, dict] = {}
    for rows in by_node.values():
        was_up = False
        for row, nxt in zip(rows, rows[1:] + [None]):
            span = max(0.0, (nxt["at"] if nxt else now) - row["at"]) * row["devices"]
            pool = pools.setdefault(
                row["pool"],
                {
                    "kind": row["pool_kind"],
                    "devices": row["devices"],
                    "up": 0.0,
                    "cordoned": 0.0,
                    "down": 0.0,
                    "nodes": set(),
                },
            )
            pool["nodes"].add(row["name"])
            pool["devices"] = max(pool["devices"], row["devices"])
            was_up = was_up or row["state"] in UP
            if row["state"] in UP:
                pool["up"] += span
            if row["state"] == NodeState.CORDONED.value:
                pool["cordoned"] += span
            elif row["state"] == NodeState.DOWN.value and was_up:
                pool["down"] += span
    return pools


def utilisation(
    history: list[dict], allocated_device_hours: dict[str, float], prices: dict[str, float | None], now: float
) -> dict[str, dict]:
    """Per pool, node-hours ``up`` = ``allocated`` + ``idle`` (or ``spare``, in a spare pool), and
    ``down``; ``cordoned`` is the part of ``up`` the node was cordoned. Dollars at the pool's price
    per device-hour (None where no price is known). Allocation beyond the recorded up time (a job
    placed before the history began) is capped at it."""
    out = {}
    for name, p in sorted(node_seconds(history, now).items()):
        per_node = 3600.0 * p["devices"]
        up = p["up"] / per_node
        allocated = min(up, allocated_device_hours.get(name, 0.0) / p["devices"])
        unused = up - allocated
        price = prices.get(name)
        row = {
            "kind": p["kind"],
            "nodes": len(p["nodes"]),
            "devices_per_node": p["devices"],
            "up": up,
            "allocated": allocated,
            "idle": 0.0 if p["kind"] == "spare" else unused,
            "spare": unused if p["kind"] == "spare" else 0.0,
            "down": p["down"] / per_node,
            "cordoned": p["cordoned"] / per_node,
            "price_per_device_hour": price,
        }
        for key in ("allocated", "idle", "spare", "down"):
            row[f"{key}_usd"] = None if price is None else row[key] * p["devices"] * price
        out[name] = row
    return out


def pool_prices(store: StateStore, report: dict) -> dict[str, float | None]:
    """Each pool's price per device-hour: what the ledger charged for it, else the price a job's spec
    names for a pool of that name (a pool no job has used yet)."""
    prices: dict[str, float | None] = {}
    for job in store.jobs():
        for pool in job.spec.resources.pools:
            prices.setdefault(pool.name, job.spec.pool_price(pool))
    for job in report["per_job"]:
        for name, p in job["by_pool"].items():
            if p["gpu_hours"] > 0:
                prices[name] = p["cost_usd"] / p["gpu_hours"]
    return prices


def cluster_utilisation(store: StateStore, now: float | None = None, report: dict | None = None) -> dict[str, dict]:
    """Utilisation per pool since the first recorded node change, up to ``now`` (``report``: the
    all-jobs ``cost_report`` at ``now``, when the caller has it already)."""
    now = store.clock.now() if now is None else now
    report = cost_report(store, now=now) if report is None else report
    allocated: dict[str, float] = {}
    for job in report["per_job"]:
        for name, p in job["by_pool"].items():
            allocated[name] = allocated.get(name, 0.0) + p["gpu_hours"]
    return utilisation(store.node_history(), allocated, pool_prices(store, report), now)
