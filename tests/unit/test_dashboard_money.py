"""Money has one format on every page, the CLI's (``humanize.money``: "$5.35M", "$65.8K"): it lives in
static/money.js, which each page loads before its own script. A page that formats dollars itself
(a "$" string literal in any other script, a "($)" column header apart) fails here; the browser test
compares money.js with ``humanize.money`` on the same values."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from orchestrator.dashboard.app import DashboardContext, create_app
from orchestrator.dashboard.tokens import ensure_tokens
from orchestrator.state.store import StateStore
from tests.helpers.dashboard_server import serving

STATIC = Path(__file__).resolve().parents[2] / "orchestrator" / "dashboard" / "static"
DOLLAR_LITERAL = re.compile(r"""["'`][^"'`\n]*\$[^{][^"'`\n]*["'`]|["'`]\$["'`]""")


def test_no_script_but_money_js_formats_dollars():
    offenders = {
        js.name: DOLLAR_LITERAL.findall(js.read_text().replace("($)", ""))
        for js in STATIC.glob("*.js")
        if js.name not in ("money.js", "plotly.min.js")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    assert DOLLAR_LITERAL.search((STATIC / "money.js").read_text())  # the pattern finds the one format


def test_every_page_loads_money_js_before_its_own_script(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    tokens = tmp_path / "dashboard-tokens"
    ensure_tokens(tokens)
    with serving(create_app(DashboardContext(store, None, tokens, tmp_path))) as base:
        assert httpx.get(f"{base}/static/money.js", timeout=30).status_code == 200
        for page, script in (("/", "app.js"), ("/burndown", "burndown.js")):
            html = httpx.get(f"{base}{page}", timeout=30).text
            assert 0 <= html.find("/static/money.js") < html.find(f"/static/{script}"), page
