"""node time of sites' on-demand instances, per model and hour, next to token usage

Revision ID: 0014_node_time
Revises: 0013_receipts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_node_time"
down_revision = "0013_receipts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "on_demand_node_time",
        sa.Column("site", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("hour", sa.BigInteger(), primary_key=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("on_demand_node_time")
