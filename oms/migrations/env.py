"""Alembic environment: runs against the connection or URL that `oms.migrate` hands it."""

from __future__ import annotations

from alembic import context

from oms.db import make_engine
from oms.migrations_filter import include_name
from oms.tables import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    options = {
        "target_metadata": metadata,
        "include_name": include_name,
        "render_as_batch": True,  # SQLite alters tables by copying them
        "compare_type": True,
    }
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # see _check_foreign_keys
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
    engine.dispose()


def _check_foreign_keys(connection) -> None:
    """SQLite alters a table by copying it, dropping the old one and renaming the copy; with foreign keys
    on, dropping a table that other rows reference fails (sqlite.org/lang_altertable.html). So they are
    off while the migrations run, and checked before they commit."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration leaves {len(broken)} broken foreign key(s), e.g. {broken[:3]}")


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
