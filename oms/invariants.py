"""The money and units invariants of the core state, checked over the whole database (`recoup check`).

Nothing may come back beyond what was sold or paid: per order line, units returned (received, or still
asked for in an open return) at most the units bought, and merchandise refunded at most the price paid;
per tender, refunds at most its amount; per order, refunds at most what was paid for it. Imported
history counts by its refund amounts (it has no tender records).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, text

from oms.context_reads import TAKEN_UNITS
from oms.types import CENT

# amounts are summed as stored; SQLite keeps NUMERIC as REAL, so a sum may be off by a float's error
_SLACK = 0.005

# units of each order line received, or asked for by a return still open (imported history may lack
# received quantities: a received return counts its requested units)
UNITS = f"""
SELECT l.order_id, l.line_no, l.quantity, t.taken
FROM order_lines l JOIN (
  SELECT rl.order_id, rl.order_line_no, SUM({TAKEN_UNITS}) AS taken
  FROM return_lines rl JOIN returns r ON r.return_id = rl.return_id
  WHERE rl.order_line_no IS NOT NULL
  GROUP BY rl.order_id, rl.order_line_no
) t ON t.order_id = l.order_id AND t.order_line_no = l.line_no
WHERE t.taken > l.quantity
ORDER BY l.order_id, l.line_no"""
# merchandise refunded per order line against the price paid for it
LINE_MONEY = """
SELECT l.order_id, l.line_no, l.unit_price * l.quantity - l.discount, t.refunded
FROM order_lines l JOIN (
  SELECT rl.order_id, rl.order_line_no, SUM(rl.refund_amount) AS refunded
  FROM return_lines rl WHERE rl.order_line_no IS NOT NULL AND rl.refund_amount IS NOT NULL
  GROUP BY rl.order_id, rl.order_line_no
) t ON t.order_id = l.order_id AND t.order_line_no = l.line_no
WHERE t.refunded > l.unit_price * l.quantity - l.discount + :slack
ORDER BY l.order_id, l.line_no"""
# refunds allocated to each tender against its amount
TENDERS = """
SELECT p.payment_id, p.order_id, p.amount, t.refunded
FROM payments p JOIN (
  SELECT payment_id, SUM(amount) AS refunded FROM refund_allocations
  WHERE payment_id IS NOT NULL GROUP BY payment_id
) t ON t.payment_id = p.payment_id
WHERE t.refunded > p.amount + :slack
ORDER BY p.payment_id"""
# refunds of each order (a return's refund records, or an imported return's line amounts) against what
# was paid (its payments; without payment records, its lines and shipping)
ORDERS = """
WITH refunded AS (
  SELECT r.order_id, SUM(f.amount) AS amount
  FROM refunds f JOIN returns r ON r.return_id = f.return_id
  WHERE r.order_id IS NOT NULL GROUP BY r.order_id
  UNION ALL
  SELECT r.order_id, SUM(rl.refund_amount)
  FROM returns r JOIN return_lines rl ON rl.return_id = r.return_id
  WHERE r.order_id IS NOT NULL AND rl.refund_amount IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM refunds f WHERE f.return_id = r.return_id)
  GROUP BY r.order_id
), per_order AS (SELECT order_id, SUM(amount) AS amount FROM refunded GROUP BY order_id),
paid AS (
  SELECT o.order_id, COALESCE(
    (SELECT SUM(p.amount) FROM payments p WHERE p.order_id = o.order_id),
    (SELECT SUM(l.unit_price * l.quantity - l.discount) FROM order_lines l WHERE l.order_id = o.order_id)
      + o.shipping_amount) AS amount
  FROM orders o WHERE o.order_id IN (SELECT order_id FROM per_order)
)
SELECT paid.order_id, paid.amount, per_order.amount
FROM paid JOIN per_order ON per_order.order_id = paid.order_id
WHERE per_order.amount > paid.amount + :slack
ORDER BY paid.order_id"""


@dataclass(frozen=True)
class Violation:
    """One thing returned or refunded beyond what was bought or paid."""

    kind: str  # line_units | line_refund | tender_refund | order_refund
    where: str
    limit: str
    actual: str

    def __str__(self) -> str:
        what = {
            "line_units": "units returned or in open returns",
            "line_refund": "merchandise refunded",
            "tender_refund": "refunded to the tender",
            "order_refund": "refunded for the order",
        }[self.kind]
        return f"{self.where}: {what} {self.actual}, more than the {self.limit} {'bought' if self.kind == 'line_units' else 'paid'}"


def _money(value: object) -> str:
    return str(Decimal(str(value)).quantize(CENT))


def over_returned_lines(connection: Connection) -> list[tuple[str, int, int, int]]:
    """(order_id, line_no, bought, returned) of every order line with more units returned or in open
    returns than it sold."""
    return [(o, int(n), int(bought), int(taken)) for o, n, bought, taken in connection.execute(text(UNITS))]


def violations(connection: Connection) -> list[Violation]:
    """Every order line, tender and order returned or refunded beyond what was bought or paid."""
    slack = {"slack": _SLACK}
    found = [
        Violation("line_units", f"order {o} line {n}", str(bought), str(taken))
        for o, n, bought, taken in over_returned_lines(connection)
    ]
    found += [
        Violation("line_refund", f"order {o} line {n}", _money(paid), _money(refunded))
        for o, n, paid, refunded in connection.execute(text(LINE_MONEY), slack)
    ]
    found += [
        Violation("tender_refund", f"payment {p} of order {o}", _money(amount), _money(refunded))
        for p, o, amount, refunded in connection.execute(text(TENDERS), slack)
    ]
    found += [
        Violation("order_refund", f"order {o}", _money(paid), _money(refunded))
        for o, paid, refunded in connection.execute(text(ORDERS), slack)
    ]
    return found
