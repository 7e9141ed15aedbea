"""The ledger's categories have one definition (``lifecycle.LedgerCategory``): the dashboard's page takes
their names, order and colours from the API instead of keeping a copy, so a category added, removed or
renamed in the enum reaches the chart, and a copy put back into the page fails here."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from orchestrator.dashboard.app import DashboardContext, create_app
from orchestrator.dashboard.series import CATEGORY_COLORS
from orchestrator.dashboard.tokens import ensure_tokens
from orchestrator.lifecycle import LedgerCategory
from orchestrator.state.store import StateStore
from tests.helpers.dashboard_server import serving

STATIC = Path(__file__).resolve().parents[2] / "orchestrator" / "dashboard" / "static"


def test_the_api_serves_the_categories_in_the_enums_order(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    tokens = tmp_path / "dashboard-tokens"
    ensure_tokens(tokens)
    with serving(create_app(DashboardContext(store, None, tokens, tmp_path))) as base:
        body = httpx.get(f"{base}/api/cost/series", timeout=30).json()
    assert [c["name"] for c in body["categories"]] == [c.value for c in LedgerCategory]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c["color"]) for c in body["categories"])
    assert all(body[c.value] == [] for c in LedgerCategory)  # a series for each, empty before any job ran


def test_every_category_has_its_own_colour():
    assert set(CATEGORY_COLORS) == set(LedgerCategory)
    assert len(set(CATEGORY_COLORS.values())) == len(CATEGORY_COLORS)


def test_the_page_keeps_no_copy_of_the_categories():
    """A list of the categories in a script (two or more of their names as string literals) is a copy;
    one name, a row that shows one category's figure, is not."""
    for script in sorted(STATIC.glob("*.js")):
        source = script.read_text()
        named = [c.value for c in LedgerCategory if re.search(rf"""["'`]{c.value}["'`]""", source)]
        assert len(named) < 2, f"{script.name} lists ledger categories {named}: take them from /api/cost/series"
