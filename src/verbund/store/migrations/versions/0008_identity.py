"""people: sessions, sign-ins under way, role-scoped admin keys, people's own keys

Revision ID: 0008_identity
Revises: 0007_concurrency
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_identity"
down_revision = "0007_concurrency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("institution_id", sa.String(128), nullable=True),
        sa.Column("site", sa.String(128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_admin_keys_key_hash", "admin_keys", ["key_hash"], unique=True)
    op.create_table(
        "people",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("institution_id", sa.String(128), nullable=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("site", sa.String(128), nullable=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_login_at", sa.Float(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("tokens_per_minute", sa.Integer(), nullable=False),
    )
    op.create_index("ix_people_inst", "people", ["institution_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("institution_id", sa.String(128), nullable=True),
        sa.Column("site", sa.String(128), nullable=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_sessions_person_id", "sessions", ["person_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "login_flows",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("return_to", sa.String(512), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_login_flows_expires_at", "login_flows", ["expires_at"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("person_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("data_class", sa.String(32), nullable=True))
        batch.create_index("ix_api_keys_person_id", ["person_id"])
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("person_id", sa.String(64), nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("role", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("role")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("person_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_person_id")
        batch.drop_column("data_class")
        batch.drop_column("expires_at")
        batch.drop_column("person_id")
    for table in ("login_flows", "sessions", "people", "admin_keys"):
        op.drop_table(table)
