"""The GPU-hour ledger: intervals of held devices, and the price of each placed node.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "ledger_intervals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(80), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("node", sa.String(120), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("pool_kind", sa.String(20), nullable=False),
        sa.Column("devices", sa.Integer, nullable=False),
        sa.Column("device_type", sa.String(40), nullable=False),
        sa.Column("phase", sa.String(63), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("price_per_device_hour", sa.Float, nullable=False),
    )
    op.create_index("ix_ledger_job", "ledger_intervals", ["job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("holds", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("holds")
    op.drop_table("ledger_intervals")
