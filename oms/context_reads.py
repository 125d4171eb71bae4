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
from oms.types import CENT

CLOSED = ("rejected", "cancelled", "expired")
_OPEN = "status NOT IN ('rejected', 'cancelled', 'expired')"
# the customer a request is about: the one it names, else its order's
_CUSTOMER = "COALESCE(:customer_id, (SELECT customer_id FROM orders WHERE order_id = :order_id))"

LOCATION = "SELECT location_id FROM locations WHERE location_id = :location_id"
ORDER = "SELECT order_id, customer_id, placed_at FROM orders WHERE order_id = :order_id"
CUSTOMER = f"SELECT customer_id FROM customers WHERE customer_id = {_CUSTOMER}"
ORDER_LINES = (
    "SELECT line_no, sku, quantity, unit_price, discount FROM order_lines WHERE order_id = :order_id"
)
# units of each order line already in an open or completed return
TAKEN_UNITS = f"""
SELECT rl.order_line_no, SUM(rl.quantity) FROM return_lines rl JOIN returns r ON r.return_id = rl.return_id
WHERE rl.order_id = :order_id AND r.{_OPEN} GROUP BY rl.order_line_no"""
# every product the request names (receiptless or replacement skus) or its order sold
PRODUCTS = """
SELECT sku, category, list_price, return_window_days, returnable FROM products WHERE sku {skus}
UNION
SELECT p.sku, p.category, p.list_price, p.return_window_days, p.returnable
FROM order_lines l JOIN products p ON p.sku = l.sku WHERE l.order_id = :order_id"""
# the customer's open or completed returns and refunded value since :since, and open or completed
# receiptless returns since :receiptless_since
CUSTOMER_RETURNS = f"""
WITH me AS (SELECT {_CUSTOMER} AS id)
SELECT
  (SELECT COUNT(*) FROM returns r, me WHERE r.customer_id = me.id
     AND r.requested_at >= :since AND r.requested_at <= :now AND r.{_OPEN}),
  (SELECT COALESCE(SUM(rl.refund_amount), 0) FROM returns r JOIN return_lines rl ON rl.return_id = r.return_id, me
     WHERE r.customer_id = me.id AND r.requested_at >= :since AND r.requested_at <= :now),
  (SELECT COUNT(*) FROM returns r, me WHERE r.customer_id = me.id AND r.order_id IS NULL
     AND r.requested_at >= :receiptless_since AND r.requested_at <= :now AND r.{_OPEN})"""
# the lowest price a unit of each sku sold for in the lookback (receiptless refunds)
LOWEST_PRICES = """
SELECT l.sku, MIN((l.unit_price * l.quantity - l.discount) * 1.0 / l.quantity)
FROM order_lines l JOIN orders o ON o.order_id = l.order_id
WHERE l.sku {skus} AND o.placed_at >= :since AND o.placed_at < :now GROUP BY l.sku"""


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
    taken: dict[int, int]  # units of each order line already in an open or completed return
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
        (LOCATION, {"location_id": location_id}),
        (ORDER, {"order_id": order_id}),
        (CUSTOMER, {"customer_id": customer_id, "order_id": order_id}),
        (ORDER_LINES, {"order_id": order_id}),
        (TAKEN_UNITS, {"order_id": order_id}),
        (PRODUCTS.format(skus=product_list), {**product_params, "order_id": order_id}),
        (
            CUSTOMER_RETURNS,
            {
                "customer_id": customer_id,
                "order_id": order_id,
                "since": db.time(since),
                "receiptless_since": db.time(receiptless_since),
                "now": db.time(now),
            },
        ),
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
    location, order, customer, lines, taken, products, counts = results[:7]
    lowest = results[7] if len(results) > 7 else []
    count, refunded, receiptless = counts[0]
    return ContextRows(
        location_found=bool(location),
        order=OrderRef(order[0][0], order[0][1], read_time(order[0][2])) if order else None,
        customer_found=bool(customer),
        order_lines={
            int(r[0]): OrderedLine(int(r[0]), r[1], int(r[2]), read_money(r[3]), read_money(r[4]))
            for r in lines
        },
        taken={int(r[0]): int(r[1]) for r in taken if r[0] is not None},
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
