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


def _orders_with_payments(engine: Engine, orders: dict[str, tuple[dt.datetime, list[Decimal]]]) -> None:
    """Only these orders and payments: each order placed at its time, with a payment per amount
    (alternately by gift card and card)."""
    with engine.begin() as connection:
        connection.execute(delete(Payment))
        connection.execute(delete(Order))
        connection.execute(
            insert(Order),
            [
                {"order_id": order_id, "channel": "web", "placed_at": placed}
                for order_id, (placed, _) in orders.items()
            ],
        )
        connection.execute(
            insert(Payment),
            [
                {
                    "payment_id": f"P-{order_id}-{k}",
                    "order_id": order_id,
                    "method": "card" if k % 2 else "gift_card",
                    "amount": amount,
                }
                for order_id, (_, amounts) in orders.items()
                for k, amount in enumerate(amounts)
            ],
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
    _orders_with_payments(engine, {"O1": (placed, [amount])})
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


def _typed(results: list) -> list:
    """Results with every value's type next to it (`==` alone takes 30 for 30.0 and 1 for True)."""
    return [[[tuple((type(v), v) for v in row) for row in rows] for rows in one] for one in results]


def test_run_each_gives_each_request_its_own_rows_in_order(engine: Engine) -> None:
    """Several requests' reads at once: each request gets exactly the rows it gets alone (values and
    types), in the same order, whatever its parameters (scalars, some or all NULL, IN-lists of texts or
    of integers); on PostgreSQL a read that several requests make is sent once for all of them, and
    parameters that cannot travel together are sent request by request."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    _orders_with_payments(  # O1 has one payment, O5 five
        engine,
        {
            f"O{i}": (base + dt.timedelta(days=i), [Decimal(10 * i + k) for k in range(i)])
            for i in range(1, 6)
        },
    )
    payments = (
        "SELECT p.payment_id, FLOAT8(p.amount), p.amount FROM payments p JOIN orders o ON o.order_id = p.order_id "
        "WHERE p.order_id = :order_id AND o.placed_at < :before ORDER BY p.amount DESC"
    )
    listed = "SELECT order_id FROM orders WHERE order_id = ANY(:ids) ORDER BY placed_at DESC"
    counted = "SELECT COUNT(*) FROM payments WHERE amount = ANY(:amounts)"  # integers, no cast
    maybe = "SELECT COUNT(*) FROM orders WHERE channel = COALESCE(:channel, 'web') AND order_id <> :order_id"

    def reads(order_id: str | None, ids: list[str], channel: str | None) -> list:
        statements = [
            (payments, {"order_id": order_id, "before": base + dt.timedelta(days=4)}),
            (maybe, {"channel": channel, "order_id": order_id}),
        ]
        if engine.dialect.name == "postgresql":  # IN-lists are arrays there
            amounts = [int(i[1:]) * 10 for i in ids if i[1:].isdigit()]
            statements[1:1] = [(listed, {"ids": ids}), (counted, {"amounts": amounts})]
        return statements

    requests = [
        reads("O5", ["O1", "O2"], None),  # O5 is too late for `before`: no rows
        reads("O3", [], None),
        reads(None, ["O4", "NOPE", "O3", "O1"], None),  # NULL order: no rows
        reads("O2", ["O2"], None),  # `channel` NULL for every request: an untyped NULL as alone
        reads("O3", ["O5"], None),  # the same request twice in one batch
    ]
    with engine.connect() as connection:
        db = Driver(connection)
        alone = [db.run(statements) for statements in requests]
        db.sent = 0
        together = db.run_each(requests)
        assert _typed(together) == _typed(alone)
        assert [len(alone[1][0]), len(alone[4][0])] == [3, 3]  # several rows, in order
        assert db.sent == (4 if db.postgres else 10)
        # some channels given: the parameter is typed from its values, and the answers still match
        mixed = [reads("O1", ["O1"], "web"), reads("O2", ["O2"], None), reads("O3", [], "store")]
        alone = [db.run(statements) for statements in mixed]
        db.sent = 0
        assert _typed(db.run_each(mixed)) == _typed(alone)
        assert db.sent == (4 if db.postgres else 6)
        # parameters that cannot travel in one array are sent request by request, and still answered:
        # different names, an int and a float, a bool and an int, aware and naive times, an int and a
        # Decimal (SQLite binds neither naive times nor Decimals)
        odd = [
            [(payments, {"order_id": "O1", "before": base})],
            [(payments, {"order_id": "O2", "before": base, "extra": 1})],
        ]
        others = (1.5, True, base.replace(tzinfo=None), Decimal("1.5")) if db.postgres else (1.5, True)
        for n, value in enumerate(others):  # each pair its own text, so each pair is one group
            odd.append([(f"SELECT COUNT(*) FROM orders WHERE :x IS NOT NULL AND {n} = {n}", {"x": value})])
            odd.append([(f"SELECT COUNT(*) FROM orders WHERE :x IS NOT NULL AND {n} = {n}", {"x": 2})])
        alone = [db.run(statements) for statements in odd]
        db.sent = 0
        assert _typed(db.run_each(odd)) == _typed(alone)
        assert db.sent == len(odd)
        assert db.run_each([]) == []


def test_run_each_keeps_each_requests_order_whatever_the_plan(engine: Engine) -> None:
    """Many requests for an ordered read of a table big enough that PostgreSQL would rather hash it
    than loop: every request still gets its rows in the read's order."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    _orders_with_payments(engine, {f"O{i:04}": (base, [Decimal(k) for k in range(3)]) for i in range(600)})
    read = "SELECT payment_id, FLOAT8(amount) FROM payments WHERE order_id = :order_id ORDER BY amount DESC"
    requests = [[(read, {"order_id": f"O{i:04}"})] for i in range(600)]
    with engine.connect() as connection:
        db = Driver(connection)
        together = db.run_each(requests)
        assert _typed(together) == _typed([db.run(statements) for statements in requests])
        assert all([row[1] for row in rows[0]] == [2.0, 1.0, 0.0] for rows in together)
