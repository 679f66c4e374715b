"""Alembic environment: run with the connection `workers.catalog.sql.upgrade` hands over
(`config.attributes["connection"]`), never from an alembic.ini."""

from __future__ import annotations

from alembic import context

from workers.catalog.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
