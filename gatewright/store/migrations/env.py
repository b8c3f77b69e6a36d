"""Alembic environment: always run on a connection handed in by ``store.db.migrate``."""

from __future__ import annotations

from alembic import context

from gatewright.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through gatewright.store.db.migrate (or `gatewright db upgrade`)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
