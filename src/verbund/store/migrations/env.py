"""Alembic environment: runs on a connection handed in by :class:`verbund.store.Store`."""

from __future__ import annotations

from alembic import context

from verbund.store._tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through verbund.store.Store.migrate()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
