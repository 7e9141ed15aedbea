"""Node history: each node's changes between up, cordoned, down and gone, with when, so cluster
utilisation (node-hours allocated, idle, spare, down) can be computed on the live path as the
simulator computes it. The controller is the one writer.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "node_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("pool_kind", sa.String(20), nullable=False),
        sa.Column("devices", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_node_history_name", "node_history", ["name", "id"])


def downgrade() -> None:
    op.drop_index("ix_node_history_name", table_name="node_history")
    op.drop_table("node_history")
