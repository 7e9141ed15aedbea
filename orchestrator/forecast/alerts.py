"""Budget alerts from the forecast: an event when a job's forecast crosses its budget (and when it
comes back under), checked periodically by the controller actor and by every `orch forecast`.

Which quantile alerts is the spec's ``cost.forecast_alert`` (``p50`` by default; ``p90`` for the
cautious). The event is recorded once per crossing: the newest ``budget.forecast_*`` event of the
job says which side it was on, so a restarted controller does not repeat it.
"""

from __future__ import annotations

import threading

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import OrchError
from orchestrator.forecast.report import job_forecast
from orchestrator.ledger.report import cost_report
from orchestrator.state.store import StateStore

OVER, UNDER = "budget.forecast_over", "budget.forecast_under"
WATCHED_STATES = ("running", "placing", "recovering", "checkpointing", "preempted")


def crossing(forecast: dict, quantile: str) -> dict | None:
    """Which budget the forecast's ``quantile`` is over (dollars first), or None."""
    budget = forecast["budget"]
    if budget.get("usd") and forecast["cost_usd"][quantile] > budget["usd"]:
        return {"budget": "usd", "limit": budget["usd"], "forecast": forecast["cost_usd"][quantile]}
    if budget.get("gpu_hours") and forecast["gpu_hours"][quantile] > budget["gpu_hours"]:
        return {"budget": "gpu_hours", "limit": budget["gpu_hours"], "forecast": forecast["gpu_hours"][quantile]}
    return None


def record_crossing(store: StateStore, forecast: dict, quantile: str = "p50") -> str | None:
    """Record ``budget.forecast_over`` / ``_under`` if the job's side of its budget changed; the kind
    recorded, or None."""
    if not (forecast["budget"].get("usd") or forecast["budget"].get("gpu_hours")):
        return None
    job = forecast["job"]
    previous = [e["kind"] for e in store.events(job, limit=1_000_000) if e["kind"] in (OVER, UNDER)]
    was_over = bool(previous) and previous[-1] == OVER
    over = crossing(forecast, quantile)
    if over and not was_over:
        unit = "$" if over["budget"] == "usd" else ""
        store.add_event(
            OVER,
            f"{job}: {quantile.upper()} forecast {unit}{over['forecast']:,.0f} is over the "
            f"budget of {unit}{over['limit']:,.0f} ({over['budget']})",
            job,
            {**over, "quantile": quantile},
        )
        return OVER
    if was_over and not over:
        store.add_event(UNDER, f"{job}: {quantile.upper()} forecast is back within budget", job, {"quantile": quantile})
        return UNDER
    return None


def check_jobs(store: StateStore, runs: int = 100) -> list[str]:
    """Forecast every live job that has a budget and record crossings; the events recorded."""
    recorded = []
    for job in store.list_jobs():
        cost = job["spec"].get("cost", {})
        if job["state"] not in WATCHED_STATES or not (cost.get("budget_usd") or cost.get("budget_gpu_hours")):
            continue
        kind = record_crossing(store, job_forecast(store, job["id"], runs=runs), cost.get("forecast_alert", "p50"))
        if kind:
            recorded.append(kind)
    return recorded


class ForecastWatch:
    """A daemon thread running ``check_jobs`` every ``period_s`` (the controller actor starts one)."""

    def __init__(self, store: StateStore, period_s: float = 600.0):
        self.store, self.period_s = store, period_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="orch-forecast-watch", daemon=True)

    def start(self) -> ForecastWatch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                check_jobs(self.store)
            except (OrchError, SQLAlchemyError, ValueError) as err:  # the watch goes on; the log says why
                self.store.add_event("forecast.error", f"forecast check failed: {type(err).__name__}: {err}")


def team_outlook(store: StateStore, runs: int = 100) -> dict[str, dict]:
    """Per team: budget, spend so far (the ledger) and the forecast total (spend of finished jobs plus
    each live job's forecast band, quantile by quantile: a sum of P50s, not the P50 of a sum)."""
    report = cost_report(store)
    teams = store.teams()
    out: dict[str, dict] = {}
    for j in report["per_job"]:
        t = out.setdefault(
            j["team"],
            {
                "budget_usd": (teams.get(j["team"]) or {}).get("budget_usd"),
                "budget_gpu_hours": (teams.get(j["team"]) or {}).get("budget_gpu_hours"),
                "spent_usd": 0.0,
                "spent_gpu_hours": 0.0,
                "forecast_usd": {"p50": 0.0, "p90": 0.0},
                "forecast_gpu_hours": {"p50": 0.0, "p90": 0.0},
            },
        )
        t["spent_usd"] += j["total_cost_usd"]
        t["spent_gpu_hours"] += j["gpu_hours"]["total"]
        fc = job_forecast(store, j["job"], runs=runs) if j["state"] in WATCHED_STATES else None
        for q in ("p50", "p90"):
            t["forecast_usd"][q] += fc["cost_usd"][q] if fc else j["total_cost_usd"]
            t["forecast_gpu_hours"][q] += fc["gpu_hours"][q] if fc else j["gpu_hours"]["total"]
    for name, team in teams.items():
        out.setdefault(
            name,
            {
                "budget_usd": team.get("budget_usd"),
                "budget_gpu_hours": team.get("budget_gpu_hours"),
                "spent_usd": 0.0,
                "spent_gpu_hours": 0.0,
                "forecast_usd": {"p50": 0.0, "p90": 0.0},
                "forecast_gpu_hours": {"p50": 0.0, "p90": 0.0},
            },
        )
    return out
