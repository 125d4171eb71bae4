"""Units of work: reading units never keep a change, writing units commit."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from oms.apikeys import create_key
from oms.tables import ApiKey
from oms.uow import unit_of_work


def _keys(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(ApiKey)).scalar_one()


def test_a_reading_unit_keeps_nothing_and_a_writing_unit_commits(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        create_key(session, "kept", ["admin"])
    assert _keys(engine) == 1
    if engine.dialect.name == "postgresql":
        # READ ONLY: the database refuses the write itself
        with (
            pytest.raises(DBAPIError, match="read-only transaction"),
            unit_of_work(engine, write=False) as session,
        ):
            create_key(session, "refused", ["admin"])
    else:
        with unit_of_work(engine, write=False) as session:
            create_key(session, "rolled back", ["admin"])
            assert session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == 2
    assert _keys(engine) == 1
    with unit_of_work(engine, write=False) as session:  # and reading works on both
        assert [k.name for k in session.execute(select(ApiKey)).scalars()] == ["kept"]
