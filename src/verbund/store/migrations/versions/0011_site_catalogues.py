"""the last catalogue of each site's agent

Revision ID: 0011_site_catalogues
Revises: 0010_trust
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_site_catalogues"
down_revision = "0010_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_catalogues",
        sa.Column("site", sa.String(128), primary_key=True),
        sa.Column("etag", sa.String(128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("site_catalogues")
