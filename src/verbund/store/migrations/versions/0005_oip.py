"""usage records: request and response body sizes (OIP v2 inference has no tokens)

Revision ID: 0003_oip
Revises: 0004_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_oip"
down_revision = "0004_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("request_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("response_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("response_bytes")
        batch.drop_column("request_bytes")
