"""A Prometheus endpoint exporting the ledger's figures (the same ones `orch cost` prints), for Grafana.

Figures are computed from the state store at scrape time; nothing is cached, so a controller
restart changes nothing a scrape sees.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from orchestrator.forecast.alerts import WATCHED_STATES, crossing
from orchestrator.forecast.report import job_forecast
from orchestrator.ledger.report import cost_report
from orchestrator.ledger.utilisation import cluster_utilisation
from orchestrator.lifecycle import LedgerCategory
from orchestrator.plan import reference
from orchestrator.state.store import StateStore


class LedgerCollector:
    def __init__(self, store: StateStore):
        self.store = store

    def collect(self):
        report = cost_report(self.store)
        hours = GaugeMetricFamily(
            "orch_gpu_hours", "Device-hours held by a job, by category", labels=["job", "team", "category"]
        )
        cost = GaugeMetricFamily("orch_cost_usd", "Dollars spent by a job", labels=["job", "team"])
        goodput = GaugeMetricFamily("orch_goodput_ratio", "Productive / total device-hours", labels=["job", "team"])
        tokens = GaugeMetricFamily("orch_tokens_trained", "Tokens trained by a job", labels=["job", "team"])
        state = GaugeMetricFamily("orch_job_info", "A job's state (value 1)", labels=["job", "team", "state"])
        for j in report["per_job"]:
            for category in LedgerCategory:
                hours.add_metric([j["job"], j["team"], category.value], j["gpu_hours"][category.value])
            cost.add_metric([j["job"], j["team"]], j["cost_usd"])
            goodput.add_metric([j["job"], j["team"]], j["goodput"])
            tokens.add_metric([j["job"], j["team"]], j["tokens"])
            state.add_metric([j["job"], j["team"], j["state"]], 1)
        storage = GaugeMetricFamily(
            "orch_storage_cost_usd", "Checkpoint storage, requests and data-read dollars", labels=["job", "team"]
        )
        for j in report["per_job"]:
            storage.add_metric([j["job"], j["team"]], j.get("storage", {}).get("cost_usd", 0.0))
        yield from (hours, cost, goodput, tokens, state, storage)
        yield from self._forecasts(report["per_job"])
        yield from self._utilisation(report)
        total = GaugeMetricFamily(
            "orch_total_gpu_hours", "Device-hours of all jobs", value=report["gpu_hours"]["total"]
        )
        yield total
        yield GaugeMetricFamily(
            "orch_reference_gpu_hours", "DeepSeek-V3's published GPU-hours", value=reference.REFERENCE_GPU_HOURS
        )
        yield GaugeMetricFamily(
            "orch_reference_cost_usd", "DeepSeek-V3's published cost", value=reference.REFERENCE_COST_USD
        )

    def _utilisation(self, report: dict):
        """Per pool node-hours and dollars allocated, idle, spare and down (``orch utilisation``)."""
        hours = GaugeMetricFamily(
            "orch_pool_node_hours",
            "Node-hours of a pool by use since the node history began",
            labels=["pool", "kind", "use"],
        )
        usd = GaugeMetricFamily(
            "orch_pool_cost_usd", "Dollars of a pool's node-hours by use", labels=["pool", "kind", "use"]
        )
        for pool, u in cluster_utilisation(self.store, report=report).items():
            for use in ("allocated", "idle", "spare", "down"):
                hours.add_metric([pool, u["kind"], use], u[use])
                if u[f"{use}_usd"] is not None:
                    usd.add_metric([pool, u["kind"], use], u[f"{use}_usd"])
        yield from (hours, usd)

    def _forecasts(self, per_job: list[dict]):
        """Forecast bands of every live job, and whether its alerting quantile is over its budget."""
        usd = GaugeMetricFamily("orch_forecast_cost_usd", "Forecast total dollars", labels=["job", "team", "quantile"])
        gpu = GaugeMetricFamily(
            "orch_forecast_gpu_hours", "Forecast total device-hours", labels=["job", "team", "quantile"]
        )
        finish = GaugeMetricFamily(
            "orch_forecast_finish_timestamp_seconds", "Forecast finish (Unix time)", labels=["job", "team", "quantile"]
        )
        over = GaugeMetricFamily(
            "orch_forecast_over_budget",
            "1 if the alerting forecast quantile is over budget",
            labels=["job", "team", "quantile"],
        )
        budget_usd = GaugeMetricFamily(
            "orch_job_budget_usd", "A job's dollar budget (spec cost.budget_usd)", labels=["job", "team"]
        )
        budget_hours = GaugeMetricFamily("orch_job_budget_gpu_hours", "A job's GPU-hour budget", labels=["job", "team"])
        for j in per_job:
            cost = self.store.get_job(j["job"])["spec"]["cost"]
            if cost.get("budget_usd"):
                budget_usd.add_metric([j["job"], j["team"]], cost["budget_usd"])
            if cost.get("budget_gpu_hours"):
                budget_hours.add_metric([j["job"], j["team"]], cost["budget_gpu_hours"])
            if j["state"] not in WATCHED_STATES:
                continue
            fc = job_forecast(self.store, j["job"], runs=100)
            for q in ("p10", "p50", "p90"):
                usd.add_metric([j["job"], j["team"], q], fc["cost_usd"][q])
                gpu.add_metric([j["job"], j["team"], q], fc["gpu_hours"][q])
                if fc["finish_at"][q] is not None:
                    finish.add_metric([j["job"], j["team"], q], fc["finish_at"][q])
            quantile = self.store.get_job(j["job"])["spec"]["cost"].get("forecast_alert", "p50")
            over.add_metric([j["job"], j["team"], quantile], 1.0 if crossing(fc, quantile) else 0.0)
        yield from (usd, gpu, finish, over, budget_usd, budget_hours)


def serve(store: StateStore, host: str = "127.0.0.1", port: int = 9400):
    registry = CollectorRegistry()
    registry.register(LedgerCollector(store))
    return start_http_server(port, addr=host, registry=registry)
