"""What the rules need to know about a return request, read in one batch (`oms.driver`).

`ReturnService.context` validates a request against these rows; a scorer adds its own statements to
the same batch, so at return time the policy context and the model's features come back in one
PostgreSQL round trip. The rows are plain values (no ORM objects): the request path only reads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from oms.driver import Driver, Statement, read_money, read_time
from oms.enums import CLOSED_STATUSES
from oms.types import CENT

_OPEN = "status NOT IN ({})".format(", ".join(f"'{status}'" for status in CLOSED_STATUSES))
# the customer a request is about: the one it names, else its order's (`o` in HEADER)
_CUSTOMER = "COALESCE(:customer_id, o.customer_id)"

# one row: the location (if it exists), the order, the customer (if it exists) and the customer's open or
# completed returns and refunded value since :since, and open or completed receiptless returns since
# :receiptless_since (the customer: the one the request names, else its order's)
HEADER = f"""
SELECT
  (SELECT location_id FROM locations WHERE location_id = :location_id),
  o.order_id, o.customer_id, o.placed_at,
  (SELECT c.customer_id FROM customers c WHERE c.customer_id = {_CUSTOMER}),
  (SELECT COUNT(*) FROM returns r WHERE r.customer_id = {_CUSTOMER}
     AND r.requested_at >= :since AND r.requested_at <= :now AND r.{_OPEN}),
  (SELECT COALESCE(SUM(rl.refund_amount), 0) FROM returns r JOIN return_lines rl ON rl.return_id = r.return_id
     WHERE r.customer_id = {_CUSTOMER} AND r.requested_at >= :since AND r.requested_at <= :now),
  (SELECT COUNT(*) FROM returns r WHERE r.customer_id = {_CUSTOMER} AND r.order_id IS NULL
     AND r.requested_at >= :receiptless_since AND r.requested_at <= :now AND r.{_OPEN})
FROM (SELECT 1 AS one) AS one LEFT JOIN orders o ON o.order_id = :order_id"""
# the units a return line `rl` of return `r` takes from its order line: those received, or those asked
# while the return is open and not yet received (a unit asked but never received comes back to the line;
# imported history without received quantities counts the units asked); `oms.invariants` checks the same
TAKEN_UNITS = f"""CASE WHEN rl.received_quantity IS NOT NULL THEN rl.received_quantity
  WHEN r.{_OPEN} THEN rl.quantity ELSE 0 END"""
# the order's lines, each with its units taken
ORDER_LINES = f"""
SELECT l.line_no, l.sku, l.quantity, l.unit_price, l.discount,
  (SELECT SUM({TAKEN_UNITS})
   FROM return_lines rl JOIN returns r ON r.return_id = rl.return_id
   WHERE rl.order_id = l.order_id AND rl.order_line_no = l.line_no)
FROM order_lines l WHERE l.order_id = :order_id ORDER BY l.line_no"""
# every product the request names (receiptless or replacement skus) or its order sold
PRODUCTS = """
SELECT sku, category, list_price, return_window_days, returnable FROM products WHERE sku {skus}
UNION
SELECT p.sku, p.category, p.list_price, p.return_window_days, p.returnable
FROM order_lines l JOIN products p ON p.sku = l.sku WHERE l.order_id = :order_id
ORDER BY 1"""
# the lowest price a unit of each sku sold for in the lookback (receiptless refunds)
LOWEST_PRICES = """
SELECT l.sku, MIN((l.unit_price * l.quantity - l.discount) * 1.0 / l.quantity)
FROM order_lines l JOIN orders o ON o.order_id = l.order_id
WHERE l.sku {skus} AND o.placed_at >= :since AND o.placed_at < :now GROUP BY l.sku ORDER BY l.sku"""


@dataclass(frozen=True)
class OrderRef:
    order_id: str
    customer_id: str | None
    placed_at: dt.datetime


@dataclass(frozen=True)
class OrderedLine:
    line_no: int
    sku: str
    quantity: int
    unit_price: Decimal
    discount: Decimal


@dataclass(frozen=True)
class ProductRef:
    sku: str
    category: str
    list_price: Decimal
    return_window_days: int
    returnable: bool


@dataclass
class ContextRows:
    location_found: bool
    order: OrderRef | None
    customer_found: bool
    order_lines: dict[int, OrderedLine]
    taken: dict[int, int]  # units of each order line received, or asked by a return still open
    products: dict[str, ProductRef]
    returns_in_window: int
    refunded_in_window: Decimal
    receiptless_in_window: int
    lowest_prices: dict[str, Decimal]  # receiptless requests only


def statements(
    db: Driver,
    *,
    order_id: str | None,
    customer_id: str | None,
    location_id: str | None,
    skus: list[str],
    now: dt.datetime,
    since: dt.datetime,
    receiptless_since: dt.datetime,
    lowest_since: dt.datetime,
) -> list[Statement]:
    """The batch for one request; `rows` reads their results back, in this order."""
    product_list, product_params = db.in_list("skus", skus)
    out: list[Statement] = [
        (
            HEADER,
            {
                "location_id": location_id,
                "customer_id": customer_id,
                "order_id": order_id,
                "since": db.time(since),
                "receiptless_since": db.time(receiptless_since),
                "now": db.time(now),
            },
        ),
        (ORDER_LINES, {"order_id": order_id}),
        (PRODUCTS.format(skus=product_list), {**product_params, "order_id": order_id}),
    ]
    if order_id is None and skus:
        out.append(
            (
                LOWEST_PRICES.format(skus=product_list),
                {**product_params, "since": db.time(lowest_since), "now": db.time(now)},
            )
        )
    return out


def rows(results: list[list[tuple]]) -> ContextRows:
    header, lines, products = results[:3]
    lowest = results[3] if len(results) > 3 else []
    location, order_id, customer_id, placed_at, customer, count, refunded, receiptless = header[0]
    return ContextRows(
        location_found=location is not None,
        order=OrderRef(order_id, customer_id, read_time(placed_at)) if order_id is not None else None,
        customer_found=customer is not None,
        order_lines={
            int(r[0]): OrderedLine(int(r[0]), r[1], int(r[2]), read_money(r[3]), read_money(r[4]))
            for r in lines
        },
        taken={int(r[0]): int(r[5]) for r in lines if r[5] is not None},
        products={r[0]: ProductRef(r[0], r[1], read_money(r[2]), int(r[3]), bool(r[4])) for r in products},
        returns_in_window=int(count),
        refunded_in_window=read_money(refunded) or Decimal("0.00"),
        receiptless_in_window=int(receiptless),
        lowest_prices=rows_lowest(lowest),
    )


def rows_lowest(found: list[tuple]) -> dict[str, Decimal]:
    """The rows of LOWEST_PRICES as sku -> price per unit, down to the cent."""
    return {r[0]: _floor_cent(r[1]) for r in found if r[1] is not None}


def _floor_cent(value: Any) -> Decimal:
    """A per-unit price down to the cent (SQLite computes in floats: 6 places first undo their error)."""
    exact = Decimal(str(value))
    if isinstance(value, float):
        exact = exact.quantize(Decimal("0.000001"))
    return exact.quantize(CENT, rounding="ROUND_FLOOR")
