"""The schema, as SQLAlchemy Core tables. Changes go through a new Alembic revision in
``migrations/versions``; ``test_migrations`` checks the two agree."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("team", String(63), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("failure_reason", String(40)),
    Column("message", Text),  # the latest wait reason or failure detail
    Column("spec", JSON, nullable=False),  # the resolved spec mapping (profile and --set applied)
    Column("source", JSON, nullable=False),  # file, profile, overrides as submitted
    Column("world_size", Integer, nullable=False),
    Column("nodes", Integer, nullable=False),
    Column("devices_per_node", Integer, nullable=False),
    Column("total_steps", Integer, nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("step", Integer, nullable=False, default=0),
    Column("tokens", Float, nullable=False, default=0.0),
    Column("loss", Float),
    Column("tokens_per_s", Float),
    Column("attempt", Integer, nullable=False, default=0),
    Column("restarts", Integer, nullable=False, default=0),
    Column("assignment", JSON),  # node names, logical node i -> assignment[i]
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("cancel_requested_at", Float),
    Column("preempt_requested", Boolean, nullable=False, default=False),
    Column("outcome", JSON),  # what the runner saw the workload do (written by the runner)
    Column("last_checkpoint_step", Integer),
    Column("holds", JSON),  # per placed node: pool, kind, devices, price (revision 0002)
    Column("owner", String(20), nullable=False, server_default="ray"),  # the control plane that moves it (0004)
    Column("preempt_deadline", Float),  # a preemption request's save deadline (a notice's), if any (0004)
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(80), nullable=False, index=True),
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("reason", Text),
    Column("at", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(80), index=True),
    Column("kind", String(40), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON),
    Column("actor", String(80), nullable=False),
    Column("at", Float, nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(80), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_metrics_job_step", "job_id", "step"),
)

node_states = Table(
    "node_states",
    metadata,
    Column("name", String(120), primary_key=True),
    Column("cordoned", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("updated_at", Float, nullable=False),
    Column("notice_deadline", Float),  # an interruption notice: when the node goes (0004)
)

node_history = Table(
    "node_history",
    metadata,  # each node's up/down/cordon changes as the controller saw them (0005)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("pool", String(63), nullable=False),
    Column("pool_kind", String(20), nullable=False),
    Column("devices", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # up | cordoned | down | gone (orchestrator.lifecycle.NodeState)
    Column("at", Float, nullable=False),
    Index("ix_node_history_name", "name", "id"),
)

teams = Table(
    "teams",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("quota_devices", Integer),
    Column("budget_gpu_hours", Float),
    Column("budget_usd", Float),
)

ledger_intervals = Table(
    "ledger_intervals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(80), nullable=False, index=False),
    Column("team", String(63), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("node", String(120), nullable=False),
    Column("pool", String(63), nullable=False),
    Column("pool_kind", String(20), nullable=False),
    Column("devices", Integer, nullable=False),
    Column("device_type", String(40), nullable=False),
    Column("phase", String(63), nullable=False),
    Column("category", String(20), nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("price_per_device_hour", Float, nullable=False),
    Index("ix_ledger_job", "job_id"),
)

leases = Table(
    "leases",
    metadata,  # leader election: one row per elected role (revision 0003)
    Column("name", String(63), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("term", Integer, nullable=False),  # +1 at each change of holder: a fencing token
    Column("acquired_at", Float, nullable=False),
    Column("renewed_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
