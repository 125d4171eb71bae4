"""The request-path driver: named parameters, IN-lists and the EPOCH_US / FLOAT8 conversions, on both
backends."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert

from features.online import _micros, _number
from oms.driver import Driver, _translate
from oms.tables import Order, Payment

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def test_conversions_translate_per_backend() -> None:
    text = "SELECT EPOCH_US(o.placed_at), FLOAT8(p.amount) FROM o WHERE id = :id AND x = ANY(:ids)"
    postgres = _translate(text, True)
    assert "(EXTRACT(EPOCH FROM o.placed_at) * 1000000)::bigint" in postgres
    assert "(p.amount)::float8" in postgres
    assert "%(id)s" in postgres and "%(ids)s" in postgres and "::float8" in postgres
    sqlite = _translate(text, False)
    assert sqlite.startswith("SELECT o.placed_at, p.amount FROM o WHERE id = :id")
    summed = "SELECT FLOAT8(SUM(l.quantity * l.unit_price - l.discount)), FLOAT8(l.discount) FROM l"
    assert _translate(summed, True) == (
        "SELECT (SUM(l.quantity * l.unit_price - l.discount))::float8, (l.discount)::float8 FROM l"
    )
    assert (
        _translate(summed, False) == "SELECT SUM(l.quantity * l.unit_price - l.discount), l.discount FROM l"
    )


# each example clears the two tables first, so one engine serves them all
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    micros=st.integers(0, 4_102_444_800 * 10**6 - 1),  # 1970 .. 2100, to the microsecond
    cents=st.integers(0, 10**10 - 1),  # NUMERIC(12, 2)
)
def test_times_and_amounts_read_exactly(engine: Engine, micros: int, cents: int) -> None:
    """Whatever the backend hands over (int8 and float8 from PostgreSQL, stored values from SQLite), the
    online features read the same microseconds and the same float as the offline batch."""
    placed = EPOCH + dt.timedelta(microseconds=micros)
    amount = Decimal(cents).scaleb(-2)
    with engine.begin() as connection:
        connection.execute(delete(Payment))
        connection.execute(delete(Order))
        connection.execute(insert(Order), [{"order_id": "O1", "channel": "web", "placed_at": placed}])
        connection.execute(
            insert(Payment), [{"payment_id": "P1", "order_id": "O1", "method": "card", "amount": amount}]
        )
    with engine.connect() as connection:
        db = Driver(connection)
        [[row]] = db.run(
            [
                (
                    "SELECT EPOCH_US(o.placed_at), FLOAT8(p.amount) FROM orders o "
                    "JOIN payments p ON p.order_id = o.order_id WHERE o.order_id = :order_id",
                    {"order_id": "O1"},
                )
            ]
        )
    if db.postgres:
        assert isinstance(row[0], int) and isinstance(row[1], float)
    assert _micros(row[0]) == micros
    assert _number(row[1]) == float(amount)


def test_an_unknown_parameter_is_an_error(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(Exception, match="order_id"):
        Driver(connection).run([("SELECT 1 FROM orders WHERE order_id = :order_id", {})])
