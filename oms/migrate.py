"""Schema migrations (Alembic, scripts in `oms/migrations/`), driven from code rather than alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from oms.db import normalise_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str | None = None, *, connection: Connection | None = None, revision: str = "head") -> None:
    """Bring the database at `url` (or on `connection`) to `revision`."""
    command.upgrade(alembic_config(url, connection), revision)


def revision(url: str, message: str) -> None:
    """Autogenerate a new migration from the difference between `oms.tables` and the database."""
    command.revision(alembic_config(url), message=message, autogenerate=True)
