"""A job's owning control plane, and notice deadlines as columns.

``jobs.owner``: which control plane moves the job (``ray``: orch's controller; ``kubernetes``: a
RayJob followed by ``k8s/submit.py``); rows from before are ``ray``'s. ``jobs.preempt_deadline``: when
a preemption request must be saved by (an interruption notice's deadline). ``node_states.notice_deadline``:
when a node with an interruption notice goes (before, a ``notice:`` prefix of the cordon reason said so).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(20), nullable=False, server_default="ray"))
        batch.add_column(sa.Column("preempt_deadline", sa.Float))
    with op.batch_alter_table("node_states") as batch:
        batch.add_column(sa.Column("notice_deadline", sa.Float))
    # rows cordoned for a notice before this revision: keep them recognisable
    op.execute("UPDATE node_states SET notice_deadline = updated_at WHERE cordoned AND reason LIKE 'notice:%'")


def downgrade() -> None:
    with op.batch_alter_table("node_states") as batch:
        batch.drop_column("notice_deadline")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("preempt_deadline")
        batch.drop_column("owner")
