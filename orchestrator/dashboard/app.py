"""The dashboard's web application: pages, the JSON API under /api/, and the operator actions.

Composed of three parts, each in its own module: the gate (``security``: Host allow-list, tokens,
same-origin actions, body limits, security headers), the read-only API and pages (``reads``), and
the operator actions (``actions``). Every refusal has one JSON shape (``errors``). The pages load only
files this server serves (the charting library from the installed ``plotly`` package); the
Content-Security-Policy forbids anything else. No CORS headers are ever sent.
"""

from __future__ import annotations

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.dashboard import actions, burndown, reads
from orchestrator.dashboard.context import DashboardContext
from orchestrator.dashboard.errors import install_error_handlers
from orchestrator.dashboard.security import Guard
from orchestrator.dashboard.verify_tasks import VerifyBoard

__all__ = ["DashboardContext", "create_app"]


def create_app(ctx: DashboardContext) -> FastAPI:
    app = FastAPI(
        title="orch dashboard",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        description="The cluster, jobs, GPU-hours and cost of an orch control plane. Reads need a token "
        "when the dashboard listens beyond loopback; actions need an operator token "
        "(Authorization: Bearer).",
    )
    if ctx.tasks is None:
        ctx.tasks = VerifyBoard(ctx.verify_slots)
    app.state.ctx = ctx
    install_error_handlers(app)
    app.include_router(burndown.pages)  # before reads.pages: its /static/burndown.js is not in reads' fixed list
    app.include_router(reads.pages)
    app.include_router(reads.router)
    app.include_router(actions.router)
    app.include_router(burndown.router)
    app.add_middleware(Guard, ctx=ctx)
    return app
