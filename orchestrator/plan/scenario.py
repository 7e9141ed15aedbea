"""What the simulated cluster is like, beyond the spec: interruption rates, spot share, spares,
replacement delay, storage bandwidth, recovery costs.

Options that change the job (spot share, spares, checkpoint interval, interruption rate) are
applied to the spec itself and re-validated, so the controller and the ledger see exactly the
spec a user would submit; the rest describe the infrastructure and only the simulator reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.errors import FieldProblem, SpecError
from orchestrator.plan.recovery import COLD, DEFAULT, PEER_GBPS, WARM
from orchestrator.spec.loader import validate_mapping
from orchestrator.spec.schema import JobSpec

SWEEPABLE = ("checkpoint_interval", "spares", "spot_fraction", "interruption_rate")


@dataclass(frozen=True)
class Scenario:
    seed: int = 0
    spot_fraction: float | None = None  # share of the job's nodes on spot; None: the spec's pools
    spot_price: float | None = None  # $/device-hour for spot; default 40% of cost.price_per_gpu_hour
    interruption_rate: float | None = None  # per spot node per day; None: the spec's pools
    notice_seconds: int | None = None  # spot interruption notice; None: the spec's pools
    spares: int | None = None  # hot-spare nodes; None: the spec's spare pools
    checkpoint_interval: str | None = None  # minutes, or "auto"; None: the spec's
    provision_delay_s: float = 600.0  # until an interrupted node's replacement joins
    # recovery (plan/recovery.py: measured on the embedded cluster, the scaling rule stated there)
    restart_s: float = COLD.rejoin_s  # a gang's cold start: processes, collectives, engines (restore excluded)
    detect_s: float = DEFAULT.detect_s  # an abrupt node loss until the control plane knows
    warm_restart_s: float | None = WARM.rejoin_s if WARM else None  # start with workers up on every node
    restore_from: str = "memory" if WARM else "storage"  # where a restarted gang reads its checkpoint
    peer_gbps: float = PEER_GBPS  # per device between nodes: a restore from a peer's memory
    storage_gbps: float = 100.0  # aggregate checkpoint write and read bandwidth, GB/s
    snapshot_gbps: float = 10.0  # per device, device to host: the stall of an asynchronous save
    blocking_saves: bool = False  # the whole save stalls training (no asynchronous upload)
    trace: tuple[tuple[float, str], ...] | None = None  # (seconds from start, node) replaces Poisson
    max_days: float | None = None  # give up after this much simulated time (default 20x the plan)

    def with_value(self, key: str, value: str) -> "Scenario":
        """This scenario with one sweep value applied (``key`` one of ``SWEEPABLE``)."""
        if key not in SWEEPABLE:
            raise option_error(f"--sweep {key}", "cannot be swept", f"sweep one of: {', '.join(SWEEPABLE)}")
        try:
            parsed = value if key == "checkpoint_interval" else (int(value) if key == "spares" else float(value))
        except ValueError:
            raise option_error(
                f"--sweep {key}", f"'{value}' is not a number", f"give numbers, e.g. --sweep {key}=1,2,4"
            ) from None
        return replace(self, **{key: parsed})


def option_error(option: str, message: str, fix: str) -> SpecError:
    return SpecError([FieldProblem(option, message, fix=fix)], "simulate")


def apply_scenario(spec: JobSpec, scenario: Scenario) -> JobSpec:
    """The spec as the scenario changes it, validated again (a bad value is a spec error)."""
    data = spec.model_dump(mode="json")
    resources = data["resources"]
    price = spec.cost.price_per_gpu_hour
    pools = resources["pools"]
    if scenario.spot_fraction is not None:
        if not 0.0 <= scenario.spot_fraction <= 1.0:
            raise option_error(
                "--spot-fraction",
                f"{scenario.spot_fraction} is not in [0, 1]",
                "give a share of the job's nodes, e.g. 0.5",
            )
        nodes = resources["nodes"]
        spot = round(nodes * scenario.spot_fraction)
        old_spot = next((p for p in pools if p["kind"] == "spot"), {})
        old_od = next((p for p in pools if p["kind"] == "on-demand"), {})
        new = []
        if nodes - spot:
            new.append(
                {
                    "name": "sim-on-demand",
                    "kind": "on-demand",
                    "nodes": nodes - spot,
                    "price_per_gpu_hour": old_od.get("price_per_gpu_hour") or price,
                    "interruptions_per_node_day": old_od.get("interruptions_per_node_day", 0.0),
                }
            )
        if spot:
            new.append(
                {
                    "name": "sim-spot",
                    "kind": "spot",
                    "nodes": spot,
                    "price_per_gpu_hour": scenario.spot_price
                    if scenario.spot_price is not None
                    else old_spot.get("price_per_gpu_hour") or round(0.4 * price, 4),
                    "interruptions_per_node_day": old_spot.get("interruptions_per_node_day", 0.0),
                    "notice_seconds": old_spot.get("notice_seconds"),
                }
            )
        pools = new + [p for p in pools if p["kind"] == "spare"]
    for pool in pools:
        if pool["kind"] == "spot":
            if scenario.interruption_rate is not None:
                pool["interruptions_per_node_day"] = scenario.interruption_rate
            if scenario.notice_seconds is not None:
                pool["notice_seconds"] = scenario.notice_seconds
            if scenario.spot_price is not None:
                pool["price_per_gpu_hour"] = scenario.spot_price
    if scenario.spares is not None:
        pools = [p for p in pools if p["kind"] != "spare"]
        if scenario.spares > 0:
            # spares are the same capacity as the nodes they stand in for: they fail at the gang's
            # node-weighted mean rate (they used to never fail, flattering every spare count)
            working = [p for p in pools if p["kind"] != "spare"]
            nodes = sum(p["nodes"] for p in working) or 1
            rate = sum(p["nodes"] * p.get("interruptions_per_node_day", 0.0) for p in working) / nodes
            pools.append(
                {
                    "name": "sim-spare",
                    "kind": "spare",
                    "nodes": scenario.spares,
                    "price_per_gpu_hour": price,
                    "interruptions_per_node_day": round(rate, 9),
                }
            )
        data.setdefault("fault_tolerance", {})["spare_nodes"] = scenario.spares
    resources["pools"] = pools
    if scenario.checkpoint_interval is not None:
        value = str(scenario.checkpoint_interval).strip()
        if value == "auto":
            data["checkpoint"]["interval"] = "auto"
        else:
            try:
                data["checkpoint"]["interval"] = {"minutes": float(value)}
            except ValueError:
                raise option_error(
                    "checkpoint_interval", f"'{value}' is not a number", "give minutes (e.g. 30) or auto"
                ) from None
    return validate_mapping(data, spec.name)
