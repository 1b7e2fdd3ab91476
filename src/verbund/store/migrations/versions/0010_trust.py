"""trust: one audit entry per previous hash (no fork); partners' checkpoints; files' owner key

Revision ID: 0010_trust
Revises: 0009_responses
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_trust"
down_revision = "0009_responses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_log_prev_hash", "audit_log", ["prev_hash"], unique=True)
    op.create_table(
        "audit_checkpoints",
        sa.Column("signer", sa.String(128), primary_key=True),
        sa.Column("chain", sa.String(128), primary_key=True),
        sa.Column("index", sa.BigInteger(), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
    )

    with op.batch_alter_table("institutions") as batch:
        for name in ("file_expires_after", "file_max_expires_after"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    op.add_column("files", sa.Column("key_id", sa.String(64), nullable=True))
    op.create_index("ix_files_key_id", "files", ["key_id"])
    op.create_index("ix_files_expires_at", "files", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_files_expires_at", table_name="files")
    op.drop_index("ix_files_key_id", table_name="files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("file_max_expires_after")
        batch.drop_column("file_expires_after")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_log_prev_hash", table_name="audit_log")
