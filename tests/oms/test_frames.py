"""`oms.frames.plain_rows`: a result's rows as the driver's tuples, the same values as SQLAlchemy's Rows."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ResourceClosedError

from oms.frames import plain_rows


@pytest.fixture
def connection():
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d TEXT)")
        connection.exec_driver_sql(
            "INSERT INTO t VALUES (1, 'x', 1.5, '2024-01-01 00:00:00'), (2, NULL, NULL, NULL)"
        )
        yield connection
    engine.dispose()


@pytest.mark.parametrize("how", ["driver_sql", "text"])
def test_plain_rows_are_tuples_with_the_rows_values_and_close_the_result(connection, how) -> None:
    def run():
        sql = "SELECT a, b, c, d FROM t ORDER BY a"
        return connection.exec_driver_sql(sql) if how == "driver_sql" else connection.execute(text(sql))

    expected = [tuple(row) for row in run().fetchall()]
    result = run()
    rows = plain_rows(result)
    assert rows == expected == [(1, "x", 1.5, "2024-01-01 00:00:00"), (2, None, None, None)]
    assert all(type(row) is tuple for row in rows)  # what pandas builds a frame from quickly
    with pytest.raises(ResourceClosedError):
        result.fetchall()


def test_plain_rows_of_an_empty_a_partly_consumed_and_an_exhausted_result(connection) -> None:
    assert plain_rows(connection.exec_driver_sql("SELECT a FROM t WHERE a > 5")) == []
    result = connection.exec_driver_sql("SELECT a FROM t ORDER BY a")
    assert result.fetchone() == (1,)
    assert plain_rows(result) == [(2,)]  # the rest, as fetchall would give
    exhausted = connection.exec_driver_sql("SELECT a FROM t ORDER BY a")
    assert exhausted.fetchall() == [(1,), (2,)]  # SQLAlchemy lets go of the cursor: nothing is left
    assert exhausted.cursor is None
    assert plain_rows(exhausted) == []
