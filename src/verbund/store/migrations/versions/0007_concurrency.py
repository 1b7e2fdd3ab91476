"""per-institution limit of concurrent requests

Revision ID: 0007_concurrency
Revises: 0002_batch
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_concurrency"
down_revision = "0002_batch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(
            sa.Column("max_concurrent_requests", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("max_concurrent_requests")
