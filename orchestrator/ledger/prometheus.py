"""A Prometheus endpoint exporting the ledger's figures (the same ones `orch cost` prints), for Grafana.

Figures are computed from the state store at scrape time; nothing is cached, so a controller
restart changes nothing a scrape sees.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from orchestrator.ledger.intervals import CATEGORIES
from orchestrator.ledger.report import cost_report
from orchestrator.plan import reference
from orchestrator.state.store import StateStore


class LedgerCollector:
    def __init__(self, store: StateStore):
        self.store = store

    def collect(self):
        report = cost_report(self.store)
        hours = GaugeMetricFamily("orch_gpu_hours", "Device-hours held by a job, by category", labels=["job", "team", "category"])
        cost = GaugeMetricFamily("orch_cost_usd", "Dollars spent by a job", labels=["job", "team"])
        goodput = GaugeMetricFamily("orch_goodput_ratio", "Productive / total device-hours", labels=["job", "team"])
        tokens = GaugeMetricFamily("orch_tokens_trained", "Tokens trained by a job", labels=["job", "team"])
        state = GaugeMetricFamily("orch_job_info", "A job's state (value 1)", labels=["job", "team", "state"])
        for j in report["per_job"]:
            for category in CATEGORIES:
                hours.add_metric([j["job"], j["team"], category], j["gpu_hours"][category])
            cost.add_metric([j["job"], j["team"]], j["cost_usd"])
            goodput.add_metric([j["job"], j["team"]], j["goodput"])
            tokens.add_metric([j["job"], j["team"]], j["tokens"])
            state.add_metric([j["job"], j["team"], j["state"]], 1)
        yield from (hours, cost, goodput, tokens, state)
        total = GaugeMetricFamily("orch_total_gpu_hours", "Device-hours of all jobs", value=report["gpu_hours"]["total"])
        yield total
        yield GaugeMetricFamily("orch_reference_gpu_hours", "DeepSeek-V3's published GPU-hours",
                                value=reference.REFERENCE_GPU_HOURS)
        yield GaugeMetricFamily("orch_reference_cost_usd", "DeepSeek-V3's published cost", value=reference.REFERENCE_COST_USD)


def serve(store: StateStore, host: str = "127.0.0.1", port: int = 9400):
    registry = CollectorRegistry()
    registry.register(LedgerCollector(store))
    return start_http_server(port, addr=host, registry=registry)
