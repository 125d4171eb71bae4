"""An exchange line: the replacement reserved from the location's sellable stock (refused when short, if the
policy requires stock), the price difference settled."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from oms.lifecycle.core import (
    CENT,
    ZERO,
    InsufficientStockError,
    Stage,
    _paid_per_unit,
    stock,
)
from oms.tables import (
    Exchange,
    OrderLine,
    Product,
    Return,
    ReturnLine,
)


class ExchangeStage(Stage):
    """An exchange line."""

    def _exchange(self, header: Return, line: ReturnLine, location: str, now: dt.datetime) -> Decimal:
        """Reserve the replacement from the location's sellable stock (refused when short, if the policy
        requires stock) and settle the difference: even exchanges (same style) are free, others cost the
        difference at today's price (positive: the customer pays; negative: refunded). Returns it."""
        assert line.replacement_sku is not None and line.received_quantity
        # the product row locked: two exchanges of the same sku take their units one after the other
        replacement = self.session.get(Product, line.replacement_sku, with_for_update=True)
        returned = self.session.get(Product, line.sku)
        assert replacement is not None and returned is not None
        if self.policy.exchanges.require_stock:
            sellable = stock(self.session, location, replacement.sku).get("sellable", 0)
            if sellable < line.received_quantity:
                raise InsufficientStockError(location, replacement.sku, line.received_quantity, sellable)
        even = replacement.style_id == returned.style_id
        if line.order_line_no is not None and header.order_id is not None:
            ordered = self.session.get(OrderLine, (header.order_id, line.order_line_no))
            assert ordered is not None
            credit = _paid_per_unit(ordered)
        else:
            credit = self._lowest_recent_price(returned, header.requested_at)
        difference = (
            ZERO if even else ((replacement.list_price - credit) * line.received_quantity).quantize(CENT)
        )
        self.session.add(
            Exchange(
                return_id=header.return_id,
                line_no=line.line_no,
                replacement_sku=replacement.sku,
                location_id=location,
                quantity=line.received_quantity,
                even=even,
                price_difference=difference,
                created_at=now,
            )
        )
        self._movement(
            location, replacement.sku, "sellable", -line.received_quantity, "exchange_reserved", line, now
        )
        self._movement(
            location, replacement.sku, "reserved", line.received_quantity, "exchange_reserved", line, now
        )
        self._notify(
            header,
            "exchange_created",
            {
                "line_no": line.line_no,
                "replacement_sku": replacement.sku,
                "quantity": line.received_quantity,
                "location_id": location,
                "price_difference": str(difference),
            },
        )
        return difference
