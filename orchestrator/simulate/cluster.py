"""The simulated node provider: the spec's pools as named nodes that fail and come back.

It implements the same ``NodeProvider`` seam as the Ray and Kubernetes providers, so the real
scheduler places gangs on it. It also keeps the cluster's bill: every node is paid for while it is
up, whether a job holds it (the ledger's share) or not (idle spares, nodes waiting for a gang).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.cluster.provider import NodeProvider, NodeView, Notices, Provisioning, Retiring
from orchestrator.spec.schema import JobSpec


@dataclass
class SimNode:
    name: str
    pool: str
    pool_kind: str
    devices: int
    price_per_device_hour: float
    interruptions_per_day: float
    notice_seconds: int | None
    alive: bool = True
    cordoned: bool = False
    up_since: float = 0.0
    up_seconds: float = 0.0  # closed spans only
    born: float | None = None  # when it first belonged to the cluster (a provisioned node: when it joined)
    gone: float | None = None  # when it was retired (it no longer belongs to the cluster)

    def view(self) -> NodeView:
        return NodeView(
            name=self.name,
            pool=self.pool,
            pool_kind=self.pool_kind,
            devices=self.devices,
            alive=self.alive,
            cordoned=self.cordoned,
        )


class SimulatedCluster(NodeProvider, Provisioning, Retiring, Notices):
    """The spec's pools on simulated time: lists, provisions and retires (hot spares) and warns (per
    pool notice)."""

    def __init__(self, spec: JobSpec, start: float = 0.0):
        self.start = start
        self.nodes_by_name: dict[str, SimNode] = {}
        self.pools: dict[str, list[SimNode]] = {}
        for pool in spec.resources.pools:
            members = [
                SimNode(
                    f"{pool.name}-{i:04d}",
                    pool.name,
                    pool.kind,
                    spec.resources.gpus_per_node,
                    spec.pool_price(pool),
                    pool.interruptions_per_node_day,
                    pool.notice_seconds,
                    up_since=start,
                    born=start,
                )
                for i in range(pool.nodes)
            ]
            self.pools[pool.name] = members
            self.nodes_by_name.update((n.name, n) for n in members)
        self._index = {name: i for i, name in enumerate(self.nodes_by_name)}
        self._views = [n.view() for n in self.nodes_by_name.values()]
        self.pending: dict[str, str] = {}  # node -> pool: a replacement or a new node on its way
        self.on_provision = None  # set by the engine: schedules a new node's arrival
        self.clock_now = None  # set by the engine: the simulated time (when a node is retired)
        self.provisioned = 0

    # the NodeProvider protocol
    def nodes(self) -> list[NodeView]:
        return list(self._views)

    def coming(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pool in self.pending.values():
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    def provision(self, pool: str, kind: str, count: int, devices: int) -> list[str]:
        """New nodes for ``pool`` (hot spares); they join after the provisioning delay."""
        template = self.pools[pool][0] if self.pools.get(pool) else None
        names = []
        for _ in range(count):
            self.provisioned += 1
            node = SimNode(
                f"{pool}-p{self.provisioned:04d}",
                pool,
                kind,
                devices,
                template.price_per_device_hour if template else 0.0,
                template.interruptions_per_day if template else 0.0,
                template.notice_seconds if template else None,
                alive=False,
            )
            self.pools.setdefault(pool, []).append(node)
            self.nodes_by_name[node.name] = node
            self._index[node.name] = len(self._views)
            self._views.append(node.view())
            self.pending[node.name] = pool
            names.append(node.name)
            if self.on_provision is not None:
                self.on_provision(node.name)
        return names

    def notice_seconds(self, node: str) -> float:
        return float(self.nodes_by_name[node].notice_seconds or 0)

    def retire(self, node: str, reason: str) -> bool:
        """The node leaves the cluster now: billed up to here, listed no more."""
        retired = self.nodes_by_name[node]
        if retired.gone is not None:
            return True
        now = self.clock_now() if self.clock_now is not None else retired.up_since
        if retired.alive:
            retired.up_seconds += now - retired.up_since
        retired.alive, retired.gone = False, now
        self.pending.pop(node, None)
        self._views = [v for v in self._views if v.name != node]
        self._index = {v.name: i for i, v in enumerate(self._views)}
        return True

    def _changed(self, node: SimNode) -> None:
        if node.gone is None:
            self._views[self._index[node.name]] = node.view()

    def fail(self, name: str, now: float) -> bool:
        """The node is gone (False if it already was)."""
        node = self.nodes_by_name[name]
        if not node.alive:
            return False
        node.alive = False
        node.up_seconds += now - node.up_since
        self._changed(node)
        return True

    def replace(self, name: str, now: float) -> None:
        """A replacement joins under the same name, uncordoned."""
        node = self.nodes_by_name[name]
        if node.gone is not None:
            return  # retired meanwhile: it does not come back
        node.alive, node.cordoned, node.up_since = True, False, now
        if node.born is None:
            node.born = now
        self.pending.pop(name, None)
        self._changed(node)

    def cordon(self, name: str, cordoned: bool = True) -> None:
        node = self.nodes_by_name[name]
        node.cordoned = cordoned
        self._changed(node)

    def bill(self, now: float) -> dict:
        """Device-hours and dollars of every node while it was up, by pool."""
        by_pool: dict[str, dict] = {}
        for pool, members in self.pools.items():
            hours = cost = 0.0
            for n in members:
                up = n.up_seconds + (now - n.up_since if n.alive else 0.0)
                hours += n.devices * up / 3600.0
                cost += n.devices * up / 3600.0 * n.price_per_device_hour
            by_pool[pool] = {"kind": members[0].pool_kind if members else "", "gpu_hours": hours, "cost_usd": cost}
        return {
            "by_pool": by_pool,
            "gpu_hours": sum(p["gpu_hours"] for p in by_pool.values()),
            "cost_usd": sum(p["cost_usd"] for p in by_pool.values()),
        }

    def utilisation(self, now: float, allocated: dict[str, float]) -> dict:
        """Per pool, like Slurm's ``sreport cluster utilization``: node-hours allocated to jobs (the
        ledger's device-hours over devices per node), spare (a spare pool's nodes up and not
        allocated), idle (other nodes up and not allocated), down (lost and waiting for their
        replacement), each priced; the job's share of the bill is its allocation, the rest is the
        cluster's idle cost."""
        out: dict[str, dict] = {}
        for pool, members in self.pools.items():
            if not members:
                continue
            devices, price, kind = members[0].devices, members[0].price_per_device_hour, members[0].pool_kind
            up = sum(n.up_seconds + (now - n.up_since if n.alive else 0.0) for n in members) / 3600.0
            down = (
                sum(max(0.0, (n.gone if n.gone is not None else now) - n.born) for n in members if n.born is not None)
                / 3600.0
                - up
            )
            used = min(up, allocated.get(pool, 0.0) / devices)
            unused = up - used
            row = {
                "kind": kind,
                "allocated": used,
                "spare": unused if kind == "spare" else 0.0,
                "idle": 0.0 if kind == "spare" else unused,
                "down": max(0.0, down),
                "up": up,
            }
            row["allocated_usd"] = used * devices * price
            row["unused_usd"] = unused * devices * price
            out[pool] = row
        return out
