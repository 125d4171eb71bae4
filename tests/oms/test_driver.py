"""The request-path driver: named parameters, IN-lists and the EPOCH_US / FLOAT8 conversions, on both
backends."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, make_url
from sqlalchemy.exc import DBAPIError

from features.online import _micros, _number
from oms.db import make_engine
from oms.driver import Driver, _translate
from oms.tables import Order, Payment
from oms.uow import unit_of_work
from tests.conftest import truncate

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


@pytest.fixture
def prepared_engines(postgres_url: str) -> Iterator[tuple[Engine, Engine]]:
    """PostgreSQL twice: psycopg's cursors (they prepare), and the driver's own pipeline (psycopg
    prepares nothing; `make_engine(driver_prepares=True)`)."""
    truncate(postgres_url)
    engines = make_engine(postgres_url), make_engine(postgres_url, driver_prepares=True)
    yield engines
    for one in engines:
        one.dispose()


def _ours(connection) -> list[str]:
    """The names of the statements the driver prepared on this connection (psycopg's are _pg3_*)."""
    rows = connection.exec_driver_sql("SELECT name FROM pg_prepared_statements ORDER BY name").all()
    return [name for (name,) in rows if not name.startswith("_pg3_")]


def test_the_drivers_own_pipeline_reads_what_psycopg_reads(prepared_engines) -> None:
    """Straight on libpq, every read gives the rows psycopg's cursors give (values, types, order), alone
    and batched (binary arrays, a batch too big for one socket buffer), whether it is prepared now or
    was before; each text is prepared once per connection, by the driver, never by psycopg."""
    cursors, own = prepared_engines
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    _orders_with_payments(
        own,
        {
            f"O{i:04}": (base + dt.timedelta(hours=i), [Decimal(137 * k + i).scaleb(-2) for k in range(3)])
            for i in range(600)
        },
    )
    reads = [
        (
            "SELECT p.payment_id, EPOCH_US(o.placed_at), FLOAT8(p.amount), p.amount, o.placed_at, o.channel "
            "FROM payments p JOIN orders o ON o.order_id = p.order_id "
            "WHERE p.order_id = :order_id AND o.placed_at < :before ORDER BY p.payment_id",
            {"order_id": "O0007", "before": base + dt.timedelta(days=30)},
        ),
        (
            "SELECT order_id FROM orders WHERE order_id = ANY(:ids) ORDER BY order_id",
            {"ids": ["O0003", "O0001"]},
        ),
        (
            "SELECT COUNT(*), :none::text IS NULL, 100 %% 7 FROM orders WHERE order_id <> :id",
            {"none": None, "id": "x"},
        ),
        (
            "SELECT :big::bigint, :small::int, :f::float8, :t::timestamptz",
            {"big": 2**40, "small": 3, "f": 0.5, "t": base},
        ),
    ]
    many = [
        [(reads[0][0], {"order_id": f"O{i:04}", "before": base + dt.timedelta(days=i)})] for i in range(600)
    ]
    with cursors.connect() as theirs, own.connect() as mine:
        expected = Driver(theirs).run(reads)
        expected_many = Driver(theirs).run_each(many)
        db = Driver(mine)
        for _ in range(3):  # prepared on the first run, reused after
            assert _typed([db.run(reads)]) == _typed([expected])
            assert _typed(db.run_each(many)) == _typed(expected_many)
        names = _ours(mine)
        assert len(names) == len(reads) + 1  # and the batched read's text, once
        assert all(name.startswith("_recoup_") for name in names)
        assert mine.connection.driver_connection.prepare_threshold is None
    with own.connect() as again:  # the pool lends the same connection: nothing is prepared twice
        assert _typed([Driver(again).run(reads)]) == _typed([expected])
        assert _ours(again) == names


def test_the_drivers_own_pipeline_begins_fails_and_rolls_back_as_psycopg_does(prepared_engines) -> None:
    """Outside a transaction the pipeline begins one with the connection's settings (a read-only unit
    of work is READ ONLY and REPEATABLE READ); a failing statement raises psycopg's error for it and
    leaves the transaction failed for the caller to roll back; a text whose prepare failed is not kept;
    statements prepared before survive the rollback."""
    _, own = prepared_engines
    ok = ("SELECT COUNT(*) FROM orders WHERE channel = :channel", {"channel": "web"})
    with unit_of_work(own, write=False) as session:
        db = Driver(session.connection())
        settings_read = db.run(
            [
                ok,
                (
                    "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')",
                    {},
                ),
            ]
        )
        assert settings_read[1] == [("repeatable read", "on")]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), unit_of_work(own, write=False) as session:
        Driver(session.connection()).run(
            [("INSERT INTO orders (order_id, channel, placed_at) VALUES ('X', 'web', now())", {})]
        )
    fresh = (
        "SELECT COUNT(*) FROM orders WHERE channel = :channel AND order_id <> :id",
        {"channel": "web", "id": "x"},
    )
    division = ("SELECT 1 / (COUNT(*) - COUNT(*)) FROM orders WHERE channel = :channel", {"channel": "web"})
    with own.connect() as connection:
        raw = connection.connection.driver_connection
        Driver(connection).run([ok])
        before = _ours(connection)
        connection.rollback()
    with pytest.raises(psycopg.errors.DivisionByZero), unit_of_work(own, write=False) as session:
        connection = session.connection()
        assert connection.connection.driver_connection is raw  # the pool's one connection, again
        try:  # the text after the division is prepared in the pipeline too, and that prepare is skipped
            Driver(connection).run([ok, division, ok, fresh])
        finally:
            assert raw.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR
    for _ in range(2):  # the failed prepare was not kept: the typo is parsed again, and fails as a typo
        with pytest.raises(psycopg.errors.SyntaxError), unit_of_work(own, write=False) as session:
            Driver(session.connection()).run([("SELEC 1 WHERE :x", {"x": 1})])
    with own.connect() as connection:
        assert raw.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE  # rolled back
        db = Driver(connection)
        assert db.run([ok, ok, fresh]) == [[(0,)], [(0,)], [(0,)]]  # the skipped prepare is made now
        after = _ours(connection)
        assert set(before) <= set(after)  # the rollbacks dropped nothing prepared before
        assert len(after) == len(before) + 2  # the division's text (prepared before it failed), the fresh one
        assert db.run([ok], end_transaction=True) == [[(0,)]]
        assert raw.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # what psycopg's cursors refuse, the driver's own pipeline refuses too: a missing parameter, a stray
    # percent sign, a statement that gives no rows
    for engine in prepared_engines:
        for statement, message in (
            (("SELECT 1 FROM orders WHERE order_id = :order_id", {}), "order_id"),
            (("SELECT '50%' WHERE :x = 1", {"x": 1}), "%"),
            (("SET LOCAL work_mem = '8MB'", {}), "didn't produce records"),
        ):
            with engine.connect() as connection, pytest.raises(psycopg.ProgrammingError, match=message):
                Driver(connection).run([statement])


def test_the_drivers_own_pipeline_recovers_from_stale_statements_and_a_broken_connection(
    prepared_engines, postgres_url: str
) -> None:
    """A prepared statement that no longer holds fails once, as under psycopg, and is prepared again:
    a table it reads changed type (the stale name is closed), or the session lost every prepared
    statement (DEALLOCATE ALL). A connection whose protocol breaks under the pipeline (a proxy garbles
    the server's reply) raises at once instead of waiting forever, and the pool replaces it."""
    cursors, own = prepared_engines
    with cursors.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS driver_scratch")
        connection.exec_driver_sql("CREATE TABLE driver_scratch (id int PRIMARY KEY, v int)")
        connection.exec_driver_sql("INSERT INTO driver_scratch VALUES (1, 7)")
    read = [("SELECT v FROM driver_scratch WHERE id = :id", {"id": 1})]
    try:
        with own.connect() as connection:
            db = Driver(connection)
            assert db.run(read, end_transaction=True) == [[(7,)]]
            [stale] = _ours(connection)
            with cursors.begin() as other:
                other.exec_driver_sql("ALTER TABLE driver_scratch ALTER COLUMN v TYPE bigint")
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="result type"):
                db.run(read)
            connection.rollback()
            connection.connection.driver_connection.rollback()
            assert db.run(read, end_transaction=True) == [[(7,)]]
            assert stale not in _ours(connection) and len(_ours(connection)) == 1  # closed, made anew
            connection.connection.driver_connection.execute("DEALLOCATE ALL")
            fresh = ("SELECT v + 1 FROM driver_scratch WHERE id = :id", {"id": 1})
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                db.run([*read, fresh])  # a new text in the same pipeline: its prepare is skipped
            connection.connection.driver_connection.rollback()
            assert db.run([*read, fresh], end_transaction=True) == [[(7,)], [(8,)]]
            assert len(_ours(connection)) == 2
            # the first failure on the server is the error, as psycopg's cursors raise it, and every
            # result's bookkeeping is done before any row is loaded: a row that cannot load ('infinity'
            # is no Python date) does not leave the skipped prepare after it remembered
            later = ("SELECT v + 2 FROM driver_scratch WHERE id = :id", {"id": 1})
            with pytest.raises(psycopg.errors.DivisionByZero):
                db.run(
                    [
                        ("SELECT 'infinity'::date WHERE :x = 1", {"x": 1}),
                        ("SELECT 1 / (v - v) FROM driver_scratch WHERE id = :id", {"id": 1}),
                        later,
                    ]
                )
            connection.connection.driver_connection.rollback()
            with pytest.raises(psycopg.errors.DivisionByZero):
                db.run([("SET LOCAL work_mem = '8MB'", {}), ("SELECT 1 / 0 WHERE :x = 1", {"x": 1})])
            connection.connection.driver_connection.rollback()
            assert db.run([later], end_transaction=True) == [[(9,)]]
    finally:
        with cursors.begin() as connection:
            connection.exec_driver_sql("DROP TABLE driver_scratch")
    # a proxy between the driver and PostgreSQL that garbles the server's next reply once armed
    armed = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, target: socket.socket, garble: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if garble and armed.is_set():
                    armed.clear()
                    data = b"X\x7f\xff\xff\xff" + data  # a message of no known type and absurd length
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def proxy() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", make_url(postgres_url).port or 5432))
                threading.Thread(target=pump, args=(client, server, False), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, True), daemon=True).start()

    threading.Thread(target=proxy, daemon=True).start()
    proxied = make_url(postgres_url).set(host="127.0.0.1", port=listener.getsockname()[1])
    engine = make_engine(proxied.render_as_string(hide_password=False), driver_prepares=True)
    outcome: list[BaseException | None] = []

    def garbled() -> None:
        try:
            with engine.connect() as connection:
                Driver(connection).run([("SELECT 1 WHERE :x = 1", {"x": 1})])
                armed.set()
                Driver(connection).run([("SELECT 2 WHERE :x = 1", {"x": 1}), ("SELECT 3", {})])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        with engine.connect() as connection:
            first = connection.connection.driver_connection.info.backend_pid
        worker = threading.Thread(target=garbled, daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "the pipeline hung on a broken connection"
        # reported as a lost connection, as SQLAlchemy reports one (so that units of work retry it)
        assert isinstance(outcome[0], DBAPIError) and outcome[0].connection_invalidated, outcome
        assert isinstance(outcome[0].orig, psycopg.OperationalError), outcome
        with engine.connect() as connection:  # the broken connection was invalidated: a new one
            assert connection.connection.driver_connection.info.backend_pid != first
            assert Driver(connection).run([("SELECT 4 WHERE :x = 1", {"x": 1})]) == [[(4,)]]
    finally:
        engine.dispose()
        listener.close()
