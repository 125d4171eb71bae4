"""Inspection records each line's condition; disposition routes it (restock, open box, refurbish, liquidate,
return to vendor, ...) and moves its units out of limbo."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from oms import enums
from oms.disposition import (
    BUCKET,
    SUSPICIOUS_CONDITIONS,
    ReturnedItem,
    check_feasible,
)
from oms.lifecycle.core import (
    SMOOTHING_UNITS,
    IllegalTransitionError,
    InvalidRequestError,
    Stage,
    _paid_per_unit,
)
from oms.tables import (
    Location,
    Order,
    OrderLine,
    Product,
    ProductStats,
    Return,
    ReturnLine,
)


class InspectionStage(Stage):
    """Inspection records each line's condition."""

    def inspect(self, return_id: str, conditions: dict[int, str], actor: str) -> Return:
        header = self.get(return_id, lock=True)
        self._check(header, "inspect")
        lines = {line.line_no: line for line in self.lines(return_id)}
        received = {n for n, line in lines.items() if line.received_quantity}
        missing = received - set(conditions)
        if missing:
            raise InvalidRequestError(f"inspection needs a condition for received line(s) {sorted(missing)}")
        unknown = set(conditions) - set(lines)
        if unknown:
            raise InvalidRequestError(f"return {return_id} has no line(s) {sorted(unknown)}")
        for line_no, condition in conditions.items():
            if condition not in enums.CONDITIONS:
                raise InvalidRequestError(
                    f"line {line_no}: condition {condition!r} is not one of {', '.join(enums.CONDITIONS)}"
                )
            lines[line_no].condition = condition
        suspicious = sorted(n for n, c in conditions.items() if c in SUSPICIOUS_CONDITIONS)
        self._move(
            header,
            "inspect",
            actor,
            {"conditions": {str(k): v for k, v in conditions.items()}, "suspicious_lines": suspicious},
        )
        self.session.flush()
        return header

    def dispose(
        self, return_id: str, actor: str, dispositions: dict[int, str | None] | None = None
    ) -> Return:
        """Route each received line (explicitly, or by the chooser) and move its stock out of limbo."""
        header = self.get(return_id, lock=True)
        if header.status != "inspected":
            raise IllegalTransitionError(
                f"return {return_id} is {header.status}; lines are disposed after inspection"
            )
        now = self.now()
        lines = {line.line_no: line for line in self.lines(return_id)}
        todo = {n: line for n, line in lines.items() if line.received_quantity and line.disposition is None}
        wanted = dict(dispositions) if dispositions else dict.fromkeys(todo)
        unknown = set(wanted) - set(todo)
        if unknown:
            raise InvalidRequestError(f"line(s) {sorted(unknown)} are not waiting for a disposition")
        if not wanted:
            raise IllegalTransitionError(f"return {return_id} has no line waiting for a disposition")
        chosen: dict[str, dict[str, Any]] = {}
        for line_no, disposition in wanted.items():
            line = todo[line_no]
            assert line.condition is not None
            expected = None
            chooser = "explicit"
            if disposition is None:
                choice = self.chooser.choose(self._returned_item(header, line))
                disposition, expected, chooser = choice.disposition, choice.expected_value, choice.chooser
            if disposition not in enums.DISPOSITIONS:
                raise InvalidRequestError(
                    f"line {line_no}: disposition {disposition!r} is not one of {', '.join(enums.DISPOSITIONS)}"
                )
            check_feasible(line.condition, disposition)
            line.disposition = disposition
            line.disposed_at = now
            location = header.location_id
            assert location is not None and line.received_quantity
            self._movement(
                location,
                line.sku,
                "returns_pending",
                -line.received_quantity,
                f"disposed_{disposition}",
                line,
                now,
            )
            self._movement(
                location,
                line.sku,
                BUCKET[disposition],
                line.received_quantity,
                f"disposed_{disposition}",
                line,
                now,
            )
            chosen[str(line_no)] = {
                "disposition": disposition,
                "chooser": chooser,
                "expected_value": str(expected) if expected is not None else None,
            }
        header.updated_at = now
        self._event(header, "disposed", header.status, header.status, actor, {"lines": chosen})
        self._complete_if_done(header, actor)
        self.session.flush()
        return header

    def _returned_item(self, header: Return, line: ReturnLine) -> ReturnedItem:
        product = self.session.get(Product, line.sku)
        assert product is not None and line.condition is not None and line.received_quantity
        price = product.list_price
        days = None
        if header.order_id is not None and line.order_line_no is not None:
            ordered = self.session.get(OrderLine, (header.order_id, line.order_line_no))
            order = self.session.get(Order, header.order_id)
            if ordered is not None:
                price = _paid_per_unit(ordered)
            if order is not None:
                days = (header.requested_at - order.placed_at).total_seconds() / 86400
        location = self.session.get(Location, header.location_id) if header.location_id else None
        day = int(header.requested_at.timestamp() // 86400)
        stats = {
            level: self.session.execute(
                select(ProductStats.sold_units, ProductStats.returned_units)
                .where(ProductStats.level == level, ProductStats.key == key, ProductStats.day <= day)
                .order_by(ProductStats.day.desc())
                .limit(1)
            ).first()
            for level, key in (("style", product.style_id), ("category", product.category))
        }
        style_rate = None
        if stats["category"] is not None and stats["category"][0]:
            category_rate = stats["category"][1] / stats["category"][0]
            sold, returned = stats["style"] if stats["style"] is not None else (0, 0)
            style_rate = (returned + SMOOTHING_UNITS * category_rate) / (sold + SMOOTHING_UNITS)
        return ReturnedItem(
            sku=line.sku,
            category=product.category,
            brand=product.brand,
            condition=line.condition,
            reason=line.reason,
            quantity=line.received_quantity,
            unit_price=price,
            unit_cost=product.unit_cost,
            location_id=header.location_id,
            list_price=product.list_price,
            location_kind=location.kind if location is not None else None,
            days_since_purchase=days,
            receiptless=header.order_id is None,
            style_return_rate=style_rate,
        )
