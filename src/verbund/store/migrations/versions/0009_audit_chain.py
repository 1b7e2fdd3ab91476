"""audit chain: one entry per previous hash (a fork cannot be written)

Revision ID: 0009_audit_chain
Revises: 0008_identity
"""

from __future__ import annotations

from alembic import op

revision = "0009_audit_chain"
down_revision = "0008_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_log_prev_hash", "audit_log", ["prev_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_log_prev_hash", table_name="audit_log")
