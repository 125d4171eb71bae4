"""The goods arrive: what was received per line goes into the location's returns-pending stock (limbo);
exchanges dearer than what came back wait for their payment."""

from __future__ import annotations

from decimal import Decimal

from oms import enums
from oms.lifecycle.core import (
    CENT,
    ZERO,
    InvalidRequestError,
    Stage,
    amount_due,
)
from oms.tables import (
    ExchangePayment,
    Location,
    Return,
)


class ReceptionStage(Stage):
    """The goods arrive."""

    def receive(
        self,
        return_id: str,
        actor: str,
        *,
        quantities: dict[int, int] | None = None,
        location_id: str | None = None,
    ) -> Return:
        header = self.get(return_id, lock=True)
        self._check(header, "receive")
        location = location_id or header.location_id
        if location is None:
            raise InvalidRequestError("receiving needs a location_id (the return has none)")
        if self.session.get(Location, location) is None:
            raise InvalidRequestError(f"location {location!r} does not exist")
        now = self.now()
        lines = self.lines(return_id)
        quantities = dict(quantities or {})
        unknown = set(quantities) - {line.line_no for line in lines}
        if unknown:
            raise InvalidRequestError(f"return {return_id} has no line(s) {sorted(unknown)}")
        arrived = {line.line_no: quantities.get(line.line_no, line.quantity) for line in lines}
        for line in lines:  # every check before any change: a refused receipt leaves nothing behind
            if not 0 <= arrived[line.line_no] <= line.quantity:
                raise InvalidRequestError(
                    f"line {line.line_no}: received {arrived[line.line_no]} of {line.quantity} unit(s)"
                )
        if not any(arrived.values()):
            raise InvalidRequestError("nothing was received: cancel the return instead")
        for line in lines:
            quantity = arrived[line.line_no]
            line.received_quantity = quantity
            if quantity:
                self._movement(location, line.sku, "returns_pending", quantity, "return_received", line, now)
        header.received_at = now
        header.location_id = location
        self._move(
            header,
            "receive",
            actor,
            {
                "location_id": location,
                "quantities": {str(line.line_no): line.received_quantity for line in lines},
            },
        )
        due = ZERO
        for line in lines:
            if line.replacement_sku is not None and line.received_quantity:
                due += max(self._exchange(header, line, location, now), ZERO)
        self._notify(header, "return_received", {"location_id": location})
        if due > 0:  # the till collects what the dearer replacements cost before the return goes on
            self._move(header, "await_payment", actor, {"amount_due": str(due)})
        self.session.flush()
        return header

    def record_payment(
        self, return_id: str, actor: str, *, amount: Decimal, method: str, reference: str | None = None
    ) -> ExchangePayment:
        """The till collected what the exchanges cost: exactly the amount due, in one tender; the
        return goes on (received)."""
        header = self.get(return_id, lock=True)
        self._check(header, "pay")
        if method not in enums.PAYMENT_METHODS:
            raise InvalidRequestError(f"method {method!r} is not one of {', '.join(enums.PAYMENT_METHODS)}")
        due = amount_due(self.session, return_id)
        if Decimal(amount).quantize(CENT) != due:
            raise InvalidRequestError(f"return {return_id} has {due} due for its exchanges, not {amount}")
        payment = ExchangePayment(
            return_id=return_id,
            paid_at=self.now(),
            method=method,
            amount=due,
            reference=reference,
            actor=actor,
        )
        self.session.add(payment)
        self._move(header, "pay", actor, {"amount": str(due), "method": method, "reference": reference})
        self.session.flush()
        return payment
