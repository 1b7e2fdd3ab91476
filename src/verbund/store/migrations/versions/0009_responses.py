"""stored responses (encrypted), the institutions' opt-in, front-end keys, model kinds per key

Revision ID: 0009_responses
Revises: 0008_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_responses"
down_revision = "0008_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("institution_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_stored_responses_institution_id", "stored_responses", ["institution_id"])
    op.create_index("ix_stored_responses_expires_at", "stored_responses", ["expires_at"])
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(
            sa.Column("store_responses", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        for name in ("person_requests_per_minute", "person_tokens_per_minute"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("front_end", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("model_kinds", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("model_kinds")
        batch.drop_column("front_end")
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("person_tokens_per_minute")
        batch.drop_column("person_requests_per_minute")
        batch.drop_column("store_responses")
    op.drop_index("ix_stored_responses_expires_at", "stored_responses")
    op.drop_index("ix_stored_responses_institution_id", "stored_responses")
    op.drop_table("stored_responses")
