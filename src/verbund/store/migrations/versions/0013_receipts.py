"""an institution may require a processing receipt for every request

Revision ID: 0013_receipts
Revises: 0012_file_sites
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_receipts"
down_revision = "0012_file_sites"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(
            sa.Column("require_receipts", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("require_receipts")
