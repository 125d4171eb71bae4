"""Online features for one incoming request, read from the database by indexed keys only.

The request is not stored yet. Only rows of its order, customer, the customer's cards/devices/postcodes
(and the accounts sharing them), its store and employee are read, plus one snapshot row per product
level; the numbers then go through the same `features.engine` functions as the offline batch.

This is the scoring hot path, so it talks to the driver directly (no ORM, no SQL compilation per
request). On PostgreSQL every statement goes in one pipeline (one network round trip; the request's skus
are resolved in SQL) and psycopg prepares them after a few uses; SQLite reads locally in two rounds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from features import engine
from features.catalogue import DAY_US, FRAUD_FEATURES_V1, Feature
from features.engine import Arrays, History, Requests
from features.sources import CUSTOMER_HISTORY_DAYS, return_events, review_events
from oms.driver import Driver, Statement, read_time

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class RequestLine:
    quantity: int
    reason: str
    order_line_no: int | None = None
    sku: str | None = None


@dataclass(frozen=True)
class OnlineRequest:
    t: dt.datetime
    channel: str
    lines: tuple[RequestLine, ...]
    order_id: str | None = None
    customer_id: str | None = None
    location_id: str | None = None
    employee_id: str | None = None
    refund_method: str | None = "original_tender"


def stored_request(row: Any, lines: pd.DataFrame) -> OnlineRequest:
    """A stored return (a `returns` row and its `return_lines`, as `oms.frames.load_frame` gives them)
    as the incoming request it was: for parity tests and benchmarks."""

    def value(v: Any) -> Any:
        return None if pd.isna(v) else v

    return OnlineRequest(
        t=row.requested_at.to_pydatetime(),
        channel=row.channel,
        order_id=value(row.order_id),
        customer_id=value(row.customer_id),
        location_id=value(row.location_id),
        employee_id=value(row.employee_id),
        refund_method=value(row.refund_method),
        lines=tuple(
            RequestLine(
                quantity=int(line.quantity),
                reason=line.reason,
                order_line_no=None if pd.isna(line.order_line_no) else int(line.order_line_no),
                sku=line.sku,
            )
            for line in lines.itertuples()
        ),
    )


# --- SQL (named :params; translated for psycopg) ----------------------------------------------------

CUSTOMER = "COALESCE(:customer_id, (SELECT customer_id FROM orders WHERE order_id = :order_id))"

ORDER_LINES = """
SELECT EPOCH_US(o.placed_at), o.channel, l.line_no, l.sku, l.quantity, FLOAT8(l.unit_price), FLOAT8(l.discount),
       l.promotion_id, p.style_id, p.size
FROM orders o JOIN order_lines l ON l.order_id = o.order_id JOIN products p ON p.sku = l.sku
WHERE o.order_id = :order_id ORDER BY l.line_no"""

PAYMENTS = "SELECT method, FLOAT8(amount) FROM payments WHERE order_id = :order_id ORDER BY payment_id"


# one row per order, its lines summed in SQL (a customer with a heavy year has ten times as many lines as
# orders, and each row costs more to send and decode than to add up); NUMERIC sums are exact, so the
# value does not depend on the order the lines are added in
CUSTOMER_ORDERS = f"""
SELECT o.customer_id, EPOCH_US(o.placed_at), FLOAT8(SUM(l.quantity)),
       FLOAT8(SUM(l.quantity * l.unit_price - l.discount))
FROM orders o JOIN order_lines l ON l.order_id = o.order_id
WHERE o.customer_id = {CUSTOMER} AND o.placed_at >= :since AND o.placed_at < :t
GROUP BY o.order_id, o.customer_id, o.placed_at
ORDER BY o.placed_at, o.order_id"""

CUSTOMER_RETURNS = f"""
SELECT r.return_id, r.customer_id, r.location_id, EPOCH_US(r.requested_at), rl.order_id, rl.quantity, rl.reason,
       ol.quantity, FLOAT8(ol.unit_price), FLOAT8(ol.discount), FLOAT8(p.list_price)
FROM returns r
JOIN return_lines rl ON rl.return_id = r.return_id
JOIN products p ON p.sku = rl.sku
LEFT JOIN order_lines ol ON ol.order_id = rl.order_id AND ol.line_no = rl.order_line_no
WHERE r.customer_id = {CUSTOMER} AND r.requested_at < :t
ORDER BY r.requested_at, r.return_id, rl.line_no"""

# first uses (before t) of the customer's devices, postcodes and cards (one index-only scan of the
# customer's orders), then the first uses by the other accounts using them (the customer's own orders are
# left out before the card's payments are joined to their orders: a heavy customer's card has hundreds);
# then the fraud reviews (before t) of the customer and of those accounts
_MINE = f"""
WITH me AS (SELECT {CUSTOMER} AS id),
every_own AS MATERIALIZED (
    SELECT o.order_id, o.device_id, o.ship_postcode, o.placed_at FROM orders o, me WHERE o.customer_id = me.id
),
own AS (SELECT * FROM every_own WHERE placed_at < :t),
mine AS (
    SELECT 'device' AS kind, device_id AS value, MIN(placed_at) AS first_at
    FROM own WHERE device_id IS NOT NULL GROUP BY device_id
    UNION ALL SELECT 'postcode', ship_postcode, MIN(placed_at)
    FROM own WHERE ship_postcode IS NOT NULL GROUP BY ship_postcode
    UNION ALL SELECT 'card', p.card_fingerprint, MIN(own.placed_at)
    FROM payments p JOIN own ON own.order_id = p.order_id WHERE p.card_fingerprint IS NOT NULL
    GROUP BY p.card_fingerprint
),
their_cards AS MATERIALIZED (
    SELECT m.kind, m.value, p.order_id FROM mine m JOIN payments p ON m.kind = 'card' AND p.card_fingerprint = m.value
    WHERE NOT EXISTS (SELECT 1 FROM every_own e WHERE e.order_id = p.order_id)
),
uses AS (
    SELECT me.id AS customer_id, m.kind, m.value, m.first_at FROM mine m, me
    UNION ALL
    SELECT o.customer_id, m.kind, m.value, MIN(o.placed_at)
    FROM mine m JOIN orders o ON m.kind = 'device' AND o.device_id = m.value, me
    WHERE o.placed_at < :t AND o.customer_id <> me.id
    GROUP BY o.customer_id, m.kind, m.value
    UNION ALL
    SELECT o.customer_id, m.kind, m.value, MIN(o.placed_at)
    FROM mine m JOIN orders o ON m.kind = 'postcode' AND o.ship_postcode = m.value, me
    WHERE o.placed_at < :t AND o.customer_id <> me.id
    GROUP BY o.customer_id, m.kind, m.value
    UNION ALL
    SELECT o.customer_id, c.kind, c.value, MIN(o.placed_at)
    FROM their_cards c JOIN orders o ON o.order_id = c.order_id, me
    WHERE o.placed_at < :t AND o.customer_id <> me.id
    GROUP BY o.customer_id, c.kind, c.value
)"""

LINKS_AND_REVIEWS = f"""{_MINE}
SELECT 'use', customer_id, kind, value, EPOCH_US(first_at), NULL FROM uses
UNION ALL
SELECT 'review', r.customer_id, NULL, NULL, EPOCH_US(f.reviewed_at), f.outcome
FROM fraud_reviews f JOIN returns r ON r.return_id = f.return_id
WHERE f.reviewed_at < :t AND r.customer_id IN (SELECT customer_id FROM uses UNION SELECT id FROM me)
ORDER BY 1, 2, 3, 4, 5, 6"""

# store windows from the latest location snapshot plus the rows after it (exact at any snapshot age);
# a busy returns centre takes thousands of returns a month, so counting them row by row would dominate
_SNAP = "(SELECT as_of, returns, receiptless, orders FROM location_stats WHERE location_id = :location_id AND day <= :{day} ORDER BY day DESC LIMIT 1)"
_AFTER = "COALESCE((SELECT as_of FROM {snap}), :epoch)"

# one row: the store's and the employee's 30-day counts, and the customer (id and created_at)
CUSTOMER_STORE_EMPLOYEE = f"""
WITH snap_t AS {_SNAP.format(day="day")}, snap_s AS {_SNAP.format(day="day30")},
ret_t AS (SELECT COUNT(*) AS n, COUNT(CASE WHEN order_id IS NULL THEN 1 END) AS receiptless FROM returns
          WHERE location_id = :location_id AND requested_at >= {_AFTER.format(snap="snap_t")} AND requested_at < :t),
ret_s AS (SELECT COUNT(*) AS n, COUNT(CASE WHEN order_id IS NULL THEN 1 END) AS receiptless FROM returns
          WHERE location_id = :location_id AND requested_at >= {_AFTER.format(snap="snap_s")} AND requested_at < :since30),
ord_t AS (SELECT COUNT(*) AS n FROM orders
          WHERE location_id = :location_id AND placed_at >= {_AFTER.format(snap="snap_t")} AND placed_at < :t),
ord_s AS (SELECT COUNT(*) AS n FROM orders
          WHERE location_id = :location_id AND placed_at >= {_AFTER.format(snap="snap_s")} AND placed_at < :since30),
emp AS (SELECT COUNT(*) AS n, COUNT(CASE WHEN order_id IS NULL THEN 1 END) AS receiptless,
               COUNT(CASE WHEN refund_method = 'cash' THEN 1 END) AS cash FROM returns
        WHERE employee_id = :employee_id AND requested_at >= :since30 AND requested_at < :t)
SELECT
  COALESCE((SELECT returns FROM snap_t), 0) + (SELECT n FROM ret_t) - COALESCE((SELECT returns FROM snap_s), 0) - (SELECT n FROM ret_s),
  COALESCE((SELECT receiptless FROM snap_t), 0) + (SELECT receiptless FROM ret_t)
    - COALESCE((SELECT receiptless FROM snap_s), 0) - (SELECT receiptless FROM ret_s),
  COALESCE((SELECT orders FROM snap_t), 0) + (SELECT n FROM ord_t) - COALESCE((SELECT orders FROM snap_s), 0) - (SELECT n FROM ord_s),
  (SELECT n FROM emp), (SELECT receiptless FROM emp), (SELECT cash FROM emp),
  c.customer_id, EPOCH_US(c.created_at)
FROM (SELECT 1 AS one) AS one LEFT JOIN customers c ON c.customer_id = {CUSTOMER}"""

PRODUCTS = (
    "SELECT sku, style_id, category, size, list_price, return_window_days FROM products WHERE sku {skus}"
)

# the latest snapshot row at or before the request's day, per sku, style and category of each sku: one
# primary-key range scan each (an OR over levels would defeat the index)
_STAT = "SELECT * FROM (SELECT level, key, sold_units, returned_units FROM product_stats WHERE level = '{level}' AND key = {key} AND day <= :day ORDER BY day DESC LIMIT 1) AS s{n}"
_KEY = {
    "sku": ":sku{i}",
    "style": "(SELECT style_id FROM products WHERE sku = :sku{i})",
    "category": "(SELECT category FROM products WHERE sku = :sku{i})",
}


def product_stats_sql(count: int) -> str:
    parts = [
        _STAT.format(level=level, key=_KEY[level].format(i=i), n=f"{level}{i}")
        for i in range(count)
        for level in ("sku", "style", "category")
    ]
    return " UNION ALL ".join(parts)


# PostgreSQL only: the request's skus resolved in SQL (the order line's sku, else the one given), so that
# products and their snapshot rows come in the first round trip instead of a second one
_WANTED_PG = """
WITH wanted AS (
    SELECT DISTINCT COALESCE(ol.sku, r.sku) AS sku
    FROM unnest(:line_nos::int[], :skus::text[]) AS r(line_no, sku)
    LEFT JOIN (order_lines ol JOIN products op ON op.sku = ol.sku)
        ON ol.order_id = :order_id AND ol.line_no = r.line_no
)"""

# each wanted sku: its product (NULLs if unknown) and the latest snapshot row at or before the request's
# day of its sku, style and category (one primary-key range scan each)
_LATEST = """LEFT JOIN LATERAL (
    SELECT ps.sold_units, ps.returned_units FROM product_stats ps
    WHERE ps.level = '{level}' AND ps.key = {key} AND ps.day <= :day ORDER BY ps.day DESC LIMIT 1
) AS {name} ON true"""

PRODUCTS_PG = f"""{_WANTED_PG}
SELECT w.sku, p.sku, p.style_id, p.category, p.size, FLOAT8(p.list_price), p.return_window_days,
       s_sku.sold_units, s_sku.returned_units, s_style.sold_units, s_style.returned_units,
       s_category.sold_units, s_category.returned_units
FROM wanted w LEFT JOIN products p ON p.sku = w.sku
{_LATEST.format(level="sku", key="w.sku", name="s_sku")}
{_LATEST.format(level="style", key="p.style_id", name="s_style")}
{_LATEST.format(level="category", key="p.category", name="s_category")}
ORDER BY w.sku"""


def _split_products_pg(rows: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """PRODUCTS_PG's rows as (product rows, snapshot rows) in the shape of the SQLite round."""
    products, stats = [], []
    for row in rows:
        if row[1] is not None:
            products.append(row[1:7])
        for level, key, at in (("sku", row[0], 7), ("style", row[2], 9), ("category", row[3], 11)):
            if key is not None and row[at] is not None:
                stats.append((level, key, row[at], row[at + 1]))
    return products, stats


def _sku_params(skus: list[str]) -> dict[str, Any]:
    return {f"sku{i}": sku for i, sku in enumerate(skus)}


def _micros(value: Any) -> float:
    """A time as microseconds since the epoch: PostgreSQL reads give them already (EPOCH_US), SQLite
    reads give the stored text."""
    if isinstance(value, int):
        return float(value)
    moment = read_time(value)
    return np.nan if moment is None else float((moment - EPOCH) // dt.timedelta(microseconds=1))


def _number(value: Any) -> float:
    if value is None:
        return np.nan
    return float(value)


def _columns(
    rows: list[tuple], names: list[str], times: tuple[str, ...] = (), numbers: tuple[str, ...] = ()
) -> Arrays:
    out: Arrays = {}
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    for name, values in zip(names, columns, strict=True):
        if name in times:
            if values and not isinstance(values[0], int):  # SQLite: stored text
                values = [int(_micros(v)) for v in values]
            out[name] = np.array(values, dtype=np.int64)
        elif name in numbers:  # floats (FLOAT8) or stored numbers; None -> NaN
            out[name] = np.array(values, dtype=float)
        else:
            out[name] = np.array(values, dtype=object)
    return out


def online_features(
    connection: Connection, request: OnlineRequest, features: tuple[Feature, ...] = FRAUD_FEATURES_V1
) -> dict[str, float]:
    requests, history = gather(connection, request)
    values = engine.compute(requests, history)
    return {f.name: float(values[f.name][0]) for f in features}


def gather(connection: Connection, request: OnlineRequest) -> tuple[Requests, History]:
    """Read everything one request's features need (PostgreSQL: one round trip; SQLite: two rounds)."""
    db = Driver(connection)
    return assemble(db, request, db.run(reads(db, request)))


def reads(db: Driver, request: OnlineRequest) -> list[Statement]:
    """The statements of `gather`, for a caller that batches them with its own reads (the return's
    context at scoring time); their rows go to `assemble`, in the same order."""
    t = request.t.astimezone(dt.UTC)
    t_us = int(_micros(t))
    params = {
        "order_id": request.order_id,
        "customer_id": request.customer_id,
        "t": db.time(t),
        "since": db.time(t - dt.timedelta(microseconds=CUSTOMER_HISTORY_DAYS * DAY_US)),
        "since30": db.time(t - dt.timedelta(days=30)),
        "location_id": request.location_id,
        "employee_id": request.employee_id,
        "day": t_us // DAY_US,
        "day30": (t_us - 30 * DAY_US) // DAY_US,
        "epoch": db.time(EPOCH),
    }

    def only(*names: str) -> dict[str, Any]:
        return {name: params[name] for name in names}

    statements = [
        (ORDER_LINES, only("order_id")),
        (PAYMENTS, only("order_id")),
        (CUSTOMER_ORDERS, only("customer_id", "order_id", "since", "t")),
        (CUSTOMER_RETURNS, only("customer_id", "order_id", "t")),
        (LINKS_AND_REVIEWS, only("customer_id", "order_id", "t")),
        (
            CUSTOMER_STORE_EMPLOYEE,
            only(
                "customer_id",
                "order_id",
                "location_id",
                "employee_id",
                "since30",
                "t",
                "day",
                "day30",
                "epoch",
            ),
        ),
    ]
    if db.postgres:
        products_params = {
            "order_id": request.order_id,
            "line_nos": [line.order_line_no for line in request.lines],
            "skus": [line.sku for line in request.lines],
        }
        statements += [
            (PRODUCTS_PG, {**products_params, "day": t_us // DAY_US}),
        ]
    return statements


def assemble(db: Driver, request: OnlineRequest, results: list[list[tuple]]) -> tuple[Requests, History]:
    """The request's feature inputs from the rows of `reads` (SQLite reads its products here)."""
    return assemble_many(db, [request], [results])


def assemble_many(
    db: Driver, requests: Sequence[OnlineRequest], results: Sequence[list[list[tuple]]]
) -> tuple[Requests, History]:
    """Several requests' feature inputs from their rows of `reads`, as one batch for a single
    `engine.compute`: the same values as computing each alone, for a fraction of the cost (the engine's
    set-up is per call, and the arrays here are built once for the batch, not once per request).

    Each request read its own customer's history, so two requests about the same customer (or sharing a
    card) must not see each other's rows: customer ids, return ids and link values are replaced by codes
    private to their request, and the line tables' `req` is the request's position."""
    customers: dict[tuple[int, object], int] = {}
    link_values: dict[tuple[int, object], int] = {}
    return_ids: dict[tuple[int, object], int] = {}

    def private(part: int, key: object, codes: dict[tuple[int, object], int]) -> int | None:
        return None if key is None else codes.setdefault((part, key), len(codes))

    header: dict[str, list] = {name: [] for name in _HEADER}
    lines: dict[str, list] = {name: [] for name in _LINES}
    order_lines: dict[str, list] = {name: [] for name in ("req", "style_id", "size", "quantity", "value")}
    payments: dict[str, list] = {name: [] for name in ("req", "method", "amount")}
    orders: list[tuple] = []
    return_rows: list[tuple] = []
    review_rows: list[tuple] = []
    link_rows: list[tuple] = []
    store: dict[str, list] = {name: [] for name in _STORE}
    employee: dict[str, list] = {name: [] for name in _EMPLOYEE}
    stats: dict[str, list[tuple[float, float]]] = {"sku": [], "style": [], "category": []}
    for part, (request, rows) in enumerate(zip(requests, results, strict=True)):
        t_us = int(_micros(request.t.astimezone(dt.UTC)))
        order_rows, payment_rows, cust_order_rows, cust_return_rows, uses_and_reviews, counts = rows[:6]
        by_line = {row[2]: row for row in order_rows}
        skus = [
            by_line[line.order_line_no][3] if line.order_line_no in by_line else line.sku
            for line in request.lines
        ]
        product_rows, stat_rows = _products(db, t_us, skus, rows)
        products = {row[0]: row for row in product_rows}
        returns_, receiptless, placed_30, emp_returns, emp_receiptless, emp_cash, customer_id, created = (
            counts[0]
        )
        placed, channel = (order_rows[0][0], order_rows[0][1]) if order_rows else (None, None)
        for name, value in (
            ("t", t_us),
            ("customer_id", private(part, customer_id, customers)),
            ("customer_created", _micros(created)),
            ("order_id", request.order_id if order_rows else None),
            ("order_placed", _micros(placed)),
            ("order_channel", channel),
            ("channel", request.channel),
            ("location_id", request.location_id),
            ("employee_id", request.employee_id),
            ("refund_method", request.refund_method),
        ):
            header[name].append(value)
        attributes = [products.get(sku) for sku in skus]
        for line, sku, product in zip(request.lines, skus, attributes, strict=True):
            ordered = by_line.get(line.order_line_no) if line.order_line_no is not None else None
            if ordered is not None:
                paid = (_number(ordered[5]) * ordered[4] - _number(ordered[6])) / ordered[4]
                promo = float(ordered[7] is not None)
            else:
                paid, promo = (_number(product[4]) if product is not None else np.nan), 0.0
            for name, value in (
                ("req", part),
                ("sku", sku),
                ("style_id", product[1] if product is not None else None),
                ("category", product[2] if product is not None else None),
                ("size", product[3] if product is not None else None),
                ("quantity", float(line.quantity)),
                ("reason", line.reason),
                ("unit_paid", paid),
                ("promo", promo),
                ("window_days", float(product[5]) if product is not None else np.nan),
            ):
                lines[name].append(value)
        for r in order_rows:
            order_lines["req"].append(part)
            order_lines["style_id"].append(r[8])
            order_lines["size"].append(r[9])
            order_lines["quantity"].append(float(r[4]))
            order_lines["value"].append(float(r[4]) * _number(r[5]) - _number(r[6]))
        for r in payment_rows:
            payments["req"].append(part)
            payments["method"].append(r[0])
            payments["amount"].append(_number(r[1]))
        # private codes in the order the engine has always seen them: the request's customer, then the
        # customers of its orders, returns, reviews and links
        orders += [(private(part, r[0], customers), *r[1:]) for r in cust_order_rows]
        return_rows += [
            (private(part, r[0], return_ids), private(part, r[1], customers), *r[2:])
            for r in cust_return_rows
        ]
        review_rows += [
            (private(part, r[1], customers), r[4], r[5]) for r in uses_and_reviews if r[0] == "review"
        ]
        link_rows += [
            (private(part, r[1], customers), r[2], private(part, r[3], link_values), r[4])
            for r in uses_and_reviews
            if r[0] == "use"
        ]
        for name, value in zip(
            _STORE, _store(request.location_id, returns_, receiptless, placed_30), strict=True
        ):
            store[name].append(value)
        for name, value in zip(
            _EMPLOYEE, _employee(request.employee_id, emp_returns, emp_receiptless, emp_cash), strict=True
        ):
            employee[name].append(value)
        # per line: the snapshot counts of its sku, style and category (0 when there is no snapshot)
        found = {(row[0], row[1]): (float(row[2]), float(row[3])) for row in stat_rows}
        for sku, product in zip(skus, attributes, strict=True):
            stats["sku"].append(found.get(("sku", sku), (0.0, 0.0)))
            stats["style"].append(found.get(("style", product[1] if product else None), (0.0, 0.0)))
            stats["category"].append(found.get(("category", product[2] if product else None), (0.0, 0.0)))

    def arrays(table: dict[str, list]) -> Arrays:
        return {name: _array(values, _KINDS.get(name)) for name, values in table.items()}

    counts = {
        level: (np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float))
        for level, pairs in stats.items()
    }
    history = History(
        orders=_columns(
            orders, ["customer_id", "t", "units", "value"], times=("t",), numbers=("units", "value")
        ),
        returns=return_events(
            _columns(
                return_rows,
                [
                    "return_id",
                    "customer_id",
                    "location_id",
                    "t",
                    "order_id",
                    "quantity",
                    "reason",
                    "ol_quantity",
                    "ol_unit_price",
                    "ol_discount",
                    "list_price",
                ],
                times=("t",),
                numbers=("quantity", "ol_quantity", "ol_unit_price", "ol_discount", "list_price"),
            )
        ),
        reviews=review_events(_columns(review_rows, ["customer_id", "t", "outcome"], times=("t",))),
        links=_columns(link_rows, ["customer_id", "kind", "value", "t"], times=("t",)),
        store={name: np.array(values, dtype=float) for name, values in store.items()},
        employee={name: np.array(values, dtype=float) for name, values in employee.items()},
        product=engine.product_rates(counts),
    )
    return Requests(arrays(header), arrays(lines), arrays(order_lines), arrays(payments)), history


_HEADER = (
    "t",
    "customer_id",
    "customer_created",
    "order_id",
    "order_placed",
    "order_channel",
    "channel",
    "location_id",
    "employee_id",
    "refund_method",
)
_LINES = (
    "req",
    "sku",
    "style_id",
    "category",
    "size",
    "quantity",
    "reason",
    "unit_paid",
    "promo",
    "window_days",
)
_STORE = ("store_returns_30d", "store_receiptless_share_30d", "store_return_rate_30d")
_EMPLOYEE = ("emp_returns_30d", "emp_receiptless_share_30d", "emp_cash_share_30d")


# the numeric columns of the request tables (the others hold objects: ids, codes, None)
_KINDS = {"req": np.int64, "t": np.int64}
_KINDS.update(
    dict.fromkeys(
        (
            "customer_created",
            "order_placed",
            "quantity",
            "unit_paid",
            "promo",
            "window_days",
            "value",
            "amount",
        ),
        np.float64,
    )
)


def _array(values: list, dtype: type | None) -> np.ndarray:
    if dtype is not None:
        return np.array(values, dtype=dtype)
    out = np.empty(len(values), dtype=object)
    out[:] = values  # element by element: a list of tuples or lists must not become a 2-d array
    return out


def _products(db: Driver, t_us: int, skus: list[str | None], rows: list[list[tuple]]) -> tuple[list, list]:
    """The request's product rows and their snapshot rows: from its PostgreSQL read, or read here on
    SQLite (a second round)."""
    if db.postgres:
        return _split_products_pg(rows[6])
    wanted = sorted({sku for sku in skus if sku is not None})
    if not wanted:
        return [], []
    fragment, sku_params = db.in_list("sku", wanted)
    product_rows, stat_rows = db.run(
        [
            (PRODUCTS.format(skus=fragment), sku_params),
            (product_stats_sql(len(wanted)), {"day": t_us // DAY_US, **_sku_params(wanted)}),
        ]
    )
    return product_rows, stat_rows


def _share(part: int, whole: int) -> float:
    return part / whole if whole else np.nan


def _store(location_id: str | None, returns_: int, receiptless: int, placed: int) -> tuple[float, ...]:
    if location_id is None:
        return (np.nan, np.nan, np.nan)
    return (float(returns_), _share(receiptless, returns_), _share(returns_, placed))


def _employee(employee_id: str | None, returns_: int, receiptless: int, cash: int) -> tuple[float, ...]:
    if employee_id is None:
        return (np.nan, np.nan, np.nan)
    return (float(returns_), _share(receiptless, returns_), _share(cash, returns_))
