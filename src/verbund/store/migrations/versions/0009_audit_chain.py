"""audit chain: one entry per previous hash (a fork cannot be written); partners' checkpoints

Revision ID: 0009_audit_chain
Revises: 0008_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_audit_chain"
down_revision = "0008_identity"
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


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_log_prev_hash", table_name="audit_log")
