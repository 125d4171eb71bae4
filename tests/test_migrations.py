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


def test_a_sqlite_table_rebuilt_by_a_migration_keeps_the_rows_that_reference_it(tmp_path) -> None:
    """0011 rebuilds `returns` (SQLite alters a check constraint by copying the table): on a database
    with returns that refunds, lines and events reference, up and down again, nothing is lost."""
    import sqlite3

    from oms.db import make_engine
    from oms.importer import import_directory
    from oms.migrate import upgrade
    from tests.factories import sample_rows, write_tables

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, revision="0010")
    engine = make_engine(url)
    import_directory(write_tables(tmp_path / "data", sample_rows()), engine)
    engine.dispose()

    def state() -> tuple:
        with sqlite3.connect(tmp_path / "old.db") as db:
            return (
                db.execute("SELECT count(*) FROM returns").fetchone()[0],
                db.execute("SELECT count(*) FROM return_lines").fetchone()[0],
                sorted(db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'returns'").fetchall()),
                db.execute("PRAGMA foreign_key_check").fetchall(),
            )

    before = state()
    assert before[0] > 0 and before[1] > 0
    upgrade(url)
    assert state() == before
    with sqlite3.connect(tmp_path / "old.db") as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'returns'").fetchone()[0]
    assert "'awaiting_payment'" in sql
    upgrade(url, revision="0010")
    assert state() == before
