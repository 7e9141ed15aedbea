"""Durable state: one module over SQLAlchemy (SQLite by default, PostgreSQL by URL)."""

from orchestrator.state.store import StateStore, default_state_url

__all__ = ["StateStore", "default_state_url"]
