"""The Alembic migrations and `oms.tables` describe the same schema, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from oms.tables import metadata


def test_migrations_match_tables(engine: Engine) -> None:
    with engine.connect() as connection:
        from oms.migrations_filter import include_name

        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": include_name}
        )
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_every_table_is_created(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= names
    assert "alembic_version" in names
