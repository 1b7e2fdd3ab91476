"""where a file's bytes lie (a site agent's file store) and the data class it holds

Revision ID: 0012_file_sites
Revises: 0011_site_catalogues
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_file_sites"
down_revision = "0011_site_catalogues"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("site", sa.String(128), nullable=True))
        batch.add_column(sa.Column("data_class", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("data_class")
        batch.drop_column("site")
