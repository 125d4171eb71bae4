"""Online features for one incoming request, read from the database by indexed keys only.

The request is not stored yet. Only rows of its order, customer, the customer's cards/devices/postcodes
(and the accounts sharing them), its store and employee are read, plus one snapshot row per product
level; the numbers then go through the same `features.engine` functions as the offline batch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, and_, func, select, tuple_

from features import engine
from features.catalogue import DAY_US, FRAUD_FEATURES_V1, Feature
from features.engine import Arrays, History, Requests
from features.sources import CUSTOMER_HISTORY_DAYS, order_events, return_events, review_events
from oms.tables import (
    Customer,
    FraudReview,
    Order,
    OrderLine,
    Payment,
    Product,
    ProductStats,
    Return,
    ReturnLine,
)

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


def micros(moment: dt.datetime | None) -> float:
    if moment is None:
        return np.nan
    return float((moment.astimezone(dt.UTC) - EPOCH) // dt.timedelta(microseconds=1))


def _time(micro: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(micro))


def _arrays(
    rows: list, columns: list[str], times: tuple[str, ...] = (), numbers: tuple[str, ...] = ()
) -> Arrays:
    out: Arrays = {}
    for position, column in enumerate(columns):
        values = [row[position] for row in rows]
        if column in times:
            out[column] = np.array([int(micros(v)) for v in values], dtype=np.int64)
        elif column in numbers:
            out[column] = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        else:
            out[column] = np.array(values, dtype=object)
    return out


def online_features(
    connection: Connection, request: OnlineRequest, features: tuple[Feature, ...] = FRAUD_FEATURES_V1
) -> dict[str, float]:
    requests, history = gather(connection, request)
    values = engine.compute(requests, history)
    return {f.name: float(values[f.name][0]) for f in features}


def gather(connection: Connection, request: OnlineRequest) -> tuple[Requests, History]:
    t_us = int(micros(request.t))
    t = request.t.astimezone(dt.UTC)
    order = None
    customer_id = request.customer_id
    order_rows: list = []
    payment_rows: list = []
    if request.order_id is not None:
        order = connection.execute(
            select(Order.placed_at, Order.channel, Order.customer_id).where(
                Order.order_id == request.order_id
            )
        ).first()
        customer_id = customer_id or (order.customer_id if order else None)
        order_rows = connection.execute(
            select(
                OrderLine.line_no,
                OrderLine.sku,
                OrderLine.quantity,
                OrderLine.unit_price,
                OrderLine.discount,
                OrderLine.promotion_id,
                Product.style_id,
                Product.size,
            )
            .join(Product, Product.sku == OrderLine.sku)
            .where(OrderLine.order_id == request.order_id)
            .order_by(OrderLine.line_no)
        ).all()
        payment_rows = connection.execute(
            select(Payment.method, Payment.amount).where(Payment.order_id == request.order_id)
        ).all()
    by_line = {row.line_no: row for row in order_rows}
    skus = [
        by_line[line.order_line_no].sku
        if line.order_line_no is not None and line.order_line_no in by_line
        else line.sku
        for line in request.lines
    ]
    products = {
        row.sku: row
        for row in connection.execute(
            select(
                Product.sku,
                Product.style_id,
                Product.category,
                Product.size,
                Product.list_price,
                Product.return_window_days,
            ).where(Product.sku.in_(set(skus)))
        ).all()
    }
    created = None
    if customer_id is not None:
        created = connection.execute(
            select(Customer.created_at).where(Customer.customer_id == customer_id)
        ).scalar_one_or_none()
    header = {
        "t": np.array([t_us], dtype=np.int64),
        "customer_id": np.array([customer_id], dtype=object),
        "customer_created": np.array([micros(created)], dtype=float),
        "order_id": np.array([request.order_id], dtype=object),
        "order_placed": np.array([micros(order.placed_at) if order else np.nan]),
        "order_channel": np.array([order.channel if order else None], dtype=object),
        "channel": np.array([request.channel], dtype=object),
        "location_id": np.array([request.location_id], dtype=object),
        "employee_id": np.array([request.employee_id], dtype=object),
        "refund_method": np.array([request.refund_method], dtype=object),
    }
    unit_paid, promo = [], []
    for line, sku in zip(request.lines, skus, strict=True):
        ordered = by_line.get(line.order_line_no) if line.order_line_no is not None else None
        if ordered is not None:
            unit_paid.append(
                (float(ordered.unit_price) * ordered.quantity - float(ordered.discount)) / ordered.quantity
            )
            promo.append(float(ordered.promotion_id is not None))
        else:
            unit_paid.append(float(products[sku].list_price) if sku in products else np.nan)
            promo.append(0.0)
    lines = {
        "req": np.zeros(len(request.lines), dtype=np.int64),
        "sku": np.array(skus, dtype=object),
        "style_id": np.array([products[s].style_id if s in products else None for s in skus], dtype=object),
        "category": np.array([products[s].category if s in products else None for s in skus], dtype=object),
        "size": np.array([products[s].size if s in products else None for s in skus], dtype=object),
        "quantity": np.array([line.quantity for line in request.lines], dtype=float),
        "reason": np.array([line.reason for line in request.lines], dtype=object),
        "unit_paid": np.array(unit_paid, dtype=float),
        "promo": np.array(promo, dtype=float),
        "window_days": np.array(
            [float(products[s].return_window_days) if s in products else np.nan for s in skus]
        ),
    }
    order_lines = {
        "req": np.zeros(len(order_rows), dtype=np.int64),
        "style_id": np.array([r.style_id for r in order_rows], dtype=object),
        "size": np.array([r.size for r in order_rows], dtype=object),
        "quantity": np.array([float(r.quantity) for r in order_rows]),
        "value": np.array([float(r.quantity) * float(r.unit_price) - float(r.discount) for r in order_rows]),
    }
    payments = {
        "req": np.zeros(len(payment_rows), dtype=np.int64),
        "method": np.array([r.method for r in payment_rows], dtype=object),
        "amount": np.array([float(r.amount) for r in payment_rows]),
    }
    requests = Requests(header, lines, order_lines, payments)
    history = History(
        orders=_customer_orders(connection, customer_id, t, t_us),
        returns=_customer_returns(connection, customer_id, t),
        reviews={"customer_id": np.zeros(0, object), "t": np.zeros(0, np.int64), "bad": np.zeros(0)},
        links={
            "customer_id": np.zeros(0, object),
            "kind": np.zeros(0, object),
            "value": np.zeros(0, object),
            "t": np.zeros(0, np.int64),
        },
        store=_store(connection, request.location_id, t),
        employee=_employee(connection, request.employee_id, t),
        product=_product_rates(connection, lines, t_us),
    )
    if customer_id is not None:
        history.links, linked = _links(connection, customer_id, t)
        history.reviews = _reviews(connection, [customer_id, *linked], t)
    return requests, history


def _customer_orders(connection: Connection, customer_id: str | None, t: dt.datetime, t_us: int) -> Arrays:
    columns = ["order_id", "customer_id", "t", "quantity", "unit_price", "discount"]
    rows: list = []
    if customer_id is not None:
        since = _time(t_us - CUSTOMER_HISTORY_DAYS * DAY_US)
        rows = connection.execute(
            select(
                Order.order_id,
                Order.customer_id,
                Order.placed_at,
                OrderLine.quantity,
                OrderLine.unit_price,
                OrderLine.discount,
            )
            .join(OrderLine, OrderLine.order_id == Order.order_id)
            .where(Order.customer_id == customer_id, Order.placed_at >= since, Order.placed_at < t)
            .order_by(Order.placed_at, Order.order_id, OrderLine.line_no)
        ).all()
    return order_events(_arrays(rows, columns, times=("t",), numbers=("quantity", "unit_price", "discount")))


def _customer_returns(connection: Connection, customer_id: str | None, t: dt.datetime) -> Arrays:
    columns = [
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
    ]
    rows: list = []
    if customer_id is not None:
        rows = connection.execute(
            select(
                Return.return_id,
                Return.customer_id,
                Return.location_id,
                Return.requested_at,
                ReturnLine.order_id,
                ReturnLine.quantity,
                ReturnLine.reason,
                OrderLine.quantity,
                OrderLine.unit_price,
                OrderLine.discount,
                Product.list_price,
            )
            .join(ReturnLine, ReturnLine.return_id == Return.return_id)
            .join(Product, Product.sku == ReturnLine.sku)
            .outerjoin(
                OrderLine,
                and_(
                    OrderLine.order_id == ReturnLine.order_id, OrderLine.line_no == ReturnLine.order_line_no
                ),
            )
            .where(Return.customer_id == customer_id, Return.requested_at < t)
            .order_by(Return.requested_at, Return.return_id, ReturnLine.line_no)
        ).all()
    return return_events(
        _arrays(
            rows,
            columns,
            times=("t",),
            numbers=("quantity", "ol_quantity", "ol_unit_price", "ol_discount", "list_price"),
        )
    )


def _reviews(connection: Connection, customers: list[str], t: dt.datetime) -> Arrays:
    rows = connection.execute(
        select(Return.customer_id, FraudReview.reviewed_at, FraudReview.outcome)
        .join(Return, Return.return_id == FraudReview.return_id)
        .where(Return.customer_id.in_(customers), FraudReview.reviewed_at < t)
    ).all()
    return review_events(_arrays(rows, ["customer_id", "t", "outcome"], times=("t",)))


def _links(connection: Connection, customer_id: str, t: dt.datetime) -> tuple[Arrays, list[str]]:
    """First uses (before t) of every card, device and postcode the customer used before t, by every
    account that used them: the customer's own rows and the linked accounts' rows."""
    before = and_(Order.placed_at < t, Order.customer_id.is_not(None))
    own = and_(before, Order.customer_id == customer_id)
    rows: list = []
    for kind, column in (("device", Order.device_id), ("postcode", Order.ship_postcode)):
        values = select(column).where(own, column.is_not(None))
        rows.extend(
            (r[0], kind, r[1], r[2])
            for r in connection.execute(
                select(Order.customer_id, column, func.min(Order.placed_at))
                .where(before, column.in_(values))
                .group_by(Order.customer_id, column)
            ).all()
        )
    cards = (
        select(Payment.card_fingerprint)
        .join(Order, Order.order_id == Payment.order_id)
        .where(own, Payment.card_fingerprint.is_not(None))
    )
    rows.extend(
        (r[0], "card", r[1], r[2])
        for r in connection.execute(
            select(Order.customer_id, Payment.card_fingerprint, func.min(Order.placed_at))
            .join(Order, Order.order_id == Payment.order_id)
            .where(before, Payment.card_fingerprint.in_(cards))
            .group_by(Order.customer_id, Payment.card_fingerprint)
        ).all()
    )
    linked = sorted({row[0] for row in rows} - {customer_id})
    return _arrays(rows, ["customer_id", "kind", "value", "t"], times=("t",)), linked


def _store(connection: Connection, location_id: str | None, t: dt.datetime) -> Arrays:
    if location_id is None:
        return {
            "store_returns_30d": np.array([np.nan]),
            "store_receiptless_share_30d": np.array([np.nan]),
            "store_return_rate_30d": np.array([np.nan]),
        }
    since = t - dt.timedelta(days=30)
    returns, receiptless = connection.execute(
        select(func.count(), func.count(Return.return_id).filter(Return.order_id.is_(None))).where(
            Return.location_id == location_id, Return.requested_at >= since, Return.requested_at < t
        )
    ).one()
    placed = connection.execute(
        select(func.count())
        .select_from(Order)
        .where(Order.location_id == location_id, Order.placed_at >= since, Order.placed_at < t)
    ).scalar_one()
    return {
        "store_returns_30d": np.array([float(returns)]),
        "store_receiptless_share_30d": np.array([receiptless / returns if returns else np.nan]),
        "store_return_rate_30d": np.array([returns / placed if placed else np.nan]),
    }


def _employee(connection: Connection, employee_id: str | None, t: dt.datetime) -> Arrays:
    if employee_id is None:
        return {
            "emp_returns_30d": np.array([np.nan]),
            "emp_receiptless_share_30d": np.array([np.nan]),
            "emp_cash_share_30d": np.array([np.nan]),
        }
    since = t - dt.timedelta(days=30)
    returns, receiptless, cash = connection.execute(
        select(
            func.count(),
            func.count(Return.return_id).filter(Return.order_id.is_(None)),
            func.count(Return.return_id).filter(Return.refund_method == "cash"),
        ).where(Return.employee_id == employee_id, Return.requested_at >= since, Return.requested_at < t)
    ).one()
    return {
        "emp_returns_30d": np.array([float(returns)]),
        "emp_receiptless_share_30d": np.array([receiptless / returns if returns else np.nan]),
        "emp_cash_share_30d": np.array([cash / returns if returns else np.nan]),
    }


def _product_rates(connection: Connection, lines: Arrays, t_us: int) -> Arrays:
    """Per request line: rates from the latest snapshot rows at or before the request's day."""
    day = t_us // DAY_US
    wanted = (
        {("sku", k) for k in lines["sku"] if k is not None}
        | {("style", k) for k in lines["style_id"] if k is not None}
        | {("category", k) for k in lines["category"] if k is not None}
    )
    latest = (
        (
            select(ProductStats.level, ProductStats.key, func.max(ProductStats.day).label("day"))
            .where(tuple_(ProductStats.level, ProductStats.key).in_(sorted(wanted)), ProductStats.day <= day)
            .group_by(ProductStats.level, ProductStats.key)
            .subquery()
        )
        if wanted
        else None
    )
    found: dict[tuple[str, str], tuple[float, float]] = {}
    if latest is not None:
        rows = connection.execute(
            select(
                ProductStats.level, ProductStats.key, ProductStats.sold_units, ProductStats.returned_units
            ).join(
                latest,
                and_(
                    ProductStats.level == latest.c.level,
                    ProductStats.key == latest.c.key,
                    ProductStats.day == latest.c.day,
                ),
            )
        ).all()
        found = {(r.level, r.key): (float(r.sold_units), float(r.returned_units)) for r in rows}
    counts = {}
    for level, column in (("sku", "sku"), ("style", "style_id"), ("category", "category")):
        pairs = [found.get((level, k), (0.0, 0.0)) for k in lines[column]]
        counts[level] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    return engine.product_rates(counts)
