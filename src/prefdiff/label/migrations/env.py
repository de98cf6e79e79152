"""Alembic environment of the label app. Run through `prefdiff.label.db.migrate`, which hands
over an open connection in `config.attributes["connection"]`."""

from __future__ import annotations

from alembic import context

from prefdiff.label.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run the migrations on the connection that `migrate` passed in."""
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the label migrations through prefdiff.label.db.migrate")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported by the label app")
run_migrations_online()
