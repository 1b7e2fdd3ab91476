"""accounting: partner sites and budgets of institutions, per-minute site availability

Revision ID: 0006_accounting
Revises: 0005_key_quotas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_accounting"
down_revision = "0005_key_quotas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(
            sa.Column("partner_site", sa.String(128), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("budget_tokens_per_month", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("budget_per_month", sa.String(32), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("budget_hard_stop", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "site_availability",
        sa.Column("site", sa.String(128), primary_key=True),
        sa.Column("access_point", sa.String(128), primary_key=True),
        sa.Column("minute", sa.BigInteger(), primary_key=True),
        sa.Column("up", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
    )
    op.create_index("ix_site_availability_minute", "site_availability", ["minute"])


def downgrade() -> None:
    op.drop_table("site_availability")
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("budget_hard_stop")
        batch.drop_column("budget_per_month")
        batch.drop_column("budget_tokens_per_month")
        batch.drop_column("partner_site")
