"""Durable state: one module over SQLAlchemy (SQLite by default, PostgreSQL by URL), ``state.store``;
its tables (``state.tables``) and the typed records that cross its boundary (``state.records``)."""
