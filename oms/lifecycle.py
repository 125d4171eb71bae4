"""The return lifecycle: authorisation, receipt, inspection, disposition, refund, exchange, review.

Header states (DESIGN.md section 4):

    requested -> authorized | pending_review | rejected
    pending_review -> authorized | rejected            (an analyst decides)
    authorized -> received | cancelled | expired
    received -> inspected -> completed                 (completed once every line is disposed and refunded)

Lines carry their own state: received quantity, condition (inspection), disposition. Every command is one
transaction: the header change, an append-only event (actor, time, from, to, payload), and its side
effects (inventory movements, refunds and their per-tender allocations, loyalty clawback, exchanges,
outbox notifications). Concurrent commands on the returns of one order are serialised by the order's
row lock on PostgreSQL (`SELECT ... FOR NO KEY UPDATE`; SQLite has one writer at a time), so what
remains returnable and refundable is never computed from a stale snapshot; on one return, also by an
optimistic version check on the header: of two conflicting changes exactly one wins, the other gets
`ConflictError` or `IllegalTransitionError`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from oms import context_reads, enums, refunds
from oms.context_reads import ContextRows, OrderedLine, OrderRef, ProductRef
from oms.disposition import (
    BUCKET,
    SUSPICIOUS_CONDITIONS,
    DispositionChooser,
    ReturnedItem,
    StaticChooser,
    check_feasible,
)
from oms.driver import Driver, Statement
from oms.errors import RecoupError
from oms.policy import Policy
from oms.tables import (
    Exchange,
    ExchangePayment,
    FraudReview,
    InventoryMovement,
    Location,
    LoyaltyLedger,
    NotificationOutbox,
    Order,
    OrderLine,
    Payment,
    Product,
    ProductStats,
    Refund,
    RefundAllocation,
    Return,
    ReturnEvent,
    ReturnLine,
)

ZERO = Decimal("0.00")
# pseudo-units of the category rate in a style's smoothed return rate (as features.catalogue, which oms
# must not import)
SMOOTHING_UNITS = 20.0
CENT = Decimal("0.01")
CLOSED = enums.CLOSED_STATUSES

TRANSITIONS: dict[str, dict[str, str]] = {
    "requested": {"authorize": "authorized", "hold": "pending_review", "reject": "rejected"},
    "pending_review": {"authorize": "authorized", "reject": "rejected"},
    "authorized": {"receive": "received", "cancel": "cancelled", "expire": "expired"},
    "received": {"inspect": "inspected", "await_payment": "awaiting_payment"},
    "awaiting_payment": {"pay": "received"},
    "inspected": {"complete": "completed"},
}


# --- errors ---------------------------------------------------------------------------------------


class LifecycleError(RecoupError):
    """Base of the lifecycle's domain errors."""


class NotFoundError(LifecycleError):
    """No such return (or order, product, location)."""


class InvalidRequestError(LifecycleError):
    """The request itself is wrong (unknown line, too many units, bad condition...)."""


class UnknownReferenceError(InvalidRequestError):
    """The request names an order, customer, location or product the database does not have (or not
    yet: a replica that scores read may lag behind the state database)."""


class IllegalTransitionError(LifecycleError):
    """The command is not allowed in the return's current state."""


class RefundHeldError(IllegalTransitionError):
    """An analyst decided the return fraud or abuse: its refund is held (loss prevention settles it)."""


class ConflictError(LifecycleError):
    """Another change to the same return won the race; re-read and retry if still wanted."""


class InsufficientStockError(ConflictError):
    """An exchange's replacement is short at the location (the message says what is there)."""

    def __init__(self, location: str, sku: str, needed: int, sellable: int) -> None:
        super().__init__(
            f"location {location} has {sellable} sellable unit(s) of {sku}; the exchange needs {needed}"
        )
        self.location, self.sku, self.needed, self.sellable = location, sku, needed, sellable


# --- requests and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRequest:
    quantity: int
    reason: str
    order_line_no: int | None = None
    sku: str | None = None  # required for receiptless lines; checked against the order line otherwise
    condition: str | None = None  # known at a store counter
    replacement_sku: str | None = None  # an exchange


@dataclass(frozen=True)
class CreateReturn:
    channel: str
    lines: tuple[LineRequest, ...]
    order_id: str | None = None
    customer_id: str | None = None
    location_id: str | None = None
    employee_id: str | None = None
    refund_method: str = "original_tender"
    return_id: str | None = None
    requested_at: dt.datetime | None = None
    receive_now: bool = False  # a store return: requested, decided and received in one call
    refund_now: bool = False  # ... and refunded at the till


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    severity: str  # "deny" | "review" | "info"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "severity": self.severity}


@dataclass(frozen=True)
class Assessment:
    """The decision on a request: policy rules first, then (when present) the fraud score."""

    decision: str  # approve | review | deny
    reasons: tuple[Reason, ...]
    score: float | None = None
    model_version: str | None = None
    degraded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    """Scores a request at return time (the Scoring API issue plugs the champion model in here).

    `reads` are the scorer's statements, run in the same batch as the context's; their rows come back
    as `RequestContext.scorer_rows`."""

    def reads(self, db: Driver, request: CreateReturn, now: dt.datetime) -> list[Statement]: ...

    def assess(
        self, session: Session, request: CreateReturn, context: RequestContext, policy_decision: Assessment
    ) -> Assessment: ...

    def assess_many(
        self, session: Session, items: Sequence[tuple[CreateReturn, RequestContext, Assessment]]
    ) -> list[Assessment]:
        """`assess` for several requests (each with its context and policy decision), in their order."""
        ...


@dataclass
class RequestContext:
    """What the rules (and the scorer) need to know about a request, read from the database."""

    now: dt.datetime
    order: OrderRef | None
    lines: list[tuple[LineRequest, OrderedLine | None, ProductRef]]
    customer_id: str | None
    returns_in_window: int
    refunded_in_window: Decimal
    receiptless_in_window: int
    unit_value: list[Decimal]  # estimated refund per unit of each line
    scorer_rows: list[list[tuple]] | None = None  # the rows of the scorer's reads

    @property
    def value(self) -> Decimal:
        return sum(
            (v * line.quantity for v, (line, _, _) in zip(self.unit_value, self.lines, strict=True)), ZERO
        )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the service ---------------------------------------------------------------------------------


class ReturnService:
    """Commands on returns, each inside the caller's transaction (`session.begin()`)."""

    def __init__(
        self,
        session: Session,
        policy: Policy,
        *,
        now: Callable[[], dt.datetime] = utcnow,
        chooser: DispositionChooser | None = None,
        scorer: Scorer | None = None,
    ) -> None:
        self.session = session
        self.policy = policy
        self.now = now
        self.chooser = chooser or StaticChooser()
        self.scorer = scorer

    # reading ---------------------------------------------------------------------------------------

    def get(self, return_id: str, *, lock: bool = False) -> Return:
        """The return; `lock`: for a change, after its order's lock (`lock_order`), so that changes to
        one order's returns happen one after another."""
        query = select(Return).where(Return.return_id == return_id)
        if lock and self._row_locks:
            order_id = self.session.execute(
                select(Return.order_id).where(Return.return_id == return_id)
            ).scalar_one_or_none()
            self.lock_order(order_id)
            query = query.with_for_update()
        found = self.session.execute(query).scalar_one_or_none()
        if found is None:
            raise NotFoundError(f"return {return_id!r} does not exist")
        if lock:
            self.session.refresh(found)  # another transaction may have committed while we waited
        return found

    def lock_order(self, order_id: str | None) -> None:
        """Hold the order's row lock until the transaction ends: what remains returnable of its lines and
        refundable of its tenders is computed from what other transactions committed, never from a
        snapshot that a concurrent return of the same order is about to change. PostgreSQL only; SQLite
        runs one writing transaction at a time (BEGIN IMMEDIATE), and a deferred one that read before
        another committed fails to write (`ConflictError`). Every change locks the order before the
        return, so two changes never wait for each other's locks."""
        if order_id is not None and self._row_locks:
            self.session.execute(
                select(Order.order_id).where(Order.order_id == order_id).with_for_update(key_share=True)
            )

    @property
    def _row_locks(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def lines(self, return_id: str) -> list[ReturnLine]:
        return list(
            self.session.execute(
                select(ReturnLine).where(ReturnLine.return_id == return_id).order_by(ReturnLine.line_no)
            ).scalars()
        )

    # creating --------------------------------------------------------------------------------------

    def context(self, request: CreateReturn) -> RequestContext:
        """Validate a request against the database and gather what the rules need (no writes).

        Everything is read in one batch (`oms.context_reads`; one round trip on PostgreSQL), together
        with the scorer's own reads when there is a scorer."""
        found = self.contexts([request])[0]
        if isinstance(found, InvalidRequestError):
            raise found
        return found

    def contexts(
        self, requests: Sequence[CreateReturn], *, last_read: bool = False
    ) -> list[RequestContext | InvalidRequestError]:
        """`context` for several requests at once: all their reads (and their scorer's) in one batch,
        one round trip on PostgreSQL. An invalid request gets its error in its place; the others are
        unaffected.

        `last_read`: nothing else is read in this transaction, so on PostgreSQL it ends in the same
        round trip (the snapshot is the same; a later read would begin a new transaction)."""
        db = Driver(self.session.connection())
        out: list[RequestContext | InvalidRequestError | None] = [None] * len(requests)
        batches: list[list[Statement]] = []  # per request read: its reads, then its scorer's
        read: list[tuple[int, dt.datetime, int]] = []  # per request read: position, time, own reads
        for position, request in enumerate(requests):
            now = self._now(request.requested_at)
            try:
                self._check_request(request)
            except InvalidRequestError as exc:
                out[position] = exc
                continue
            statements = context_reads.statements(
                db,
                order_id=request.order_id,
                customer_id=request.customer_id,
                location_id=request.location_id,
                skus=sorted(
                    {line.sku for line in request.lines if line.sku is not None}
                    | {line.replacement_sku for line in request.lines if line.replacement_sku is not None}
                ),
                now=now,
                since=now - dt.timedelta(days=self.policy.velocity.window_days),
                receiptless_since=now - dt.timedelta(days=self.policy.receiptless.per_customer_days),
                lowest_since=now - dt.timedelta(days=self.policy.receiptless.lowest_price_days),
            )
            own = len(statements)
            if self.scorer is not None:
                statements += self.scorer.reads(db, request, now)
            batches.append(statements)
            read.append((position, now, own))
        # one round trip for all; a kind of read that several requests make runs once for all of them
        results = db.run_each(batches, end_transaction=last_read) if batches else []
        for (position, now, own), rows in zip(read, results, strict=True):
            try:
                context = self._validate(requests[position], now, context_reads.rows(rows[:own]))
            except InvalidRequestError as exc:
                out[position] = exc
                continue
            context.scorer_rows = rows[own:] if self.scorer is not None else None
            out[position] = context
        return out  # type: ignore[return-value]  # every position is filled

    @staticmethod
    def _check_request(request: CreateReturn) -> None:
        """What can be checked before reading anything."""
        if request.channel not in enums.RETURN_CHANNELS:
            raise InvalidRequestError(
                f"channel {request.channel!r} is not one of {', '.join(enums.RETURN_CHANNELS)}"
            )
        if request.refund_method not in enums.REFUND_METHODS:
            raise InvalidRequestError(
                f"refund_method {request.refund_method!r} is not one of {', '.join(enums.REFUND_METHODS)}"
            )
        if not request.lines:
            raise InvalidRequestError("a return needs at least one line")

    def _validate(self, request: CreateReturn, now: dt.datetime, found: ContextRows) -> RequestContext:
        if request.location_id is not None and not found.location_found:
            raise UnknownReferenceError(f"location {request.location_id!r} does not exist")
        order = None
        customer_id = request.customer_id
        if request.order_id is not None:
            order = found.order
            if order is None:
                raise UnknownReferenceError(f"order {request.order_id!r} does not exist")
            if customer_id is not None and order.customer_id is not None and customer_id != order.customer_id:
                raise InvalidRequestError(f"order {order.order_id} belongs to another customer")
            customer_id = customer_id or order.customer_id
        if customer_id is not None and not found.customer_found:
            raise UnknownReferenceError(f"customer {customer_id!r} does not exist")
        lines: list[tuple[LineRequest, OrderedLine | None, ProductRef]] = []
        unit_value: list[Decimal] = []
        order_lines = found.order_lines if order is not None else {}
        remaining = {
            line_no: max(line.quantity - found.taken.get(line_no, 0), 0)
            for line_no, line in order_lines.items()
        }
        products = found.products
        for position, line in enumerate(request.lines, start=1):
            if line.quantity < 1:
                raise InvalidRequestError(f"line {position}: quantity must be at least 1")
            if line.reason not in enums.RETURN_REASONS:
                raise InvalidRequestError(
                    f"line {position}: reason {line.reason!r} is not one of {', '.join(enums.RETURN_REASONS)}"
                )
            if line.condition is not None and line.condition not in enums.CONDITIONS:
                raise InvalidRequestError(
                    f"line {position}: condition {line.condition!r} is not one of {', '.join(enums.CONDITIONS)}"
                )
            ordered: OrderedLine | None
            if order is not None:
                if line.order_line_no is None:
                    raise InvalidRequestError(
                        f"line {position}: order_line_no is required when the return has an order"
                    )
                ordered = order_lines.get(line.order_line_no)
                if ordered is None:
                    raise InvalidRequestError(
                        f"line {position}: order {order.order_id} has no line {line.order_line_no}"
                    )
                if line.sku is not None and line.sku != ordered.sku:
                    raise InvalidRequestError(
                        f"line {position}: sku {line.sku!r} is not what line {line.order_line_no} sold ({ordered.sku})"
                    )
                left = remaining.get(ordered.line_no, ordered.quantity)
                if line.quantity > left:
                    raise InvalidRequestError(
                        f"line {position}: {line.quantity} unit(s) asked but only {left} of line {ordered.line_no} remain returnable"
                    )
                remaining[ordered.line_no] = left - line.quantity
                product = products.get(ordered.sku)
                unit_value.append(_paid_per_unit(ordered))
            else:
                if line.order_line_no is not None:
                    raise InvalidRequestError(
                        f"line {position}: order_line_no given but the return has no order"
                    )
                if line.sku is None:
                    raise InvalidRequestError(f"line {position}: a receiptless line needs its sku")
                ordered = None
                product = products.get(line.sku)
                if product is None:
                    raise UnknownReferenceError(f"line {position}: product {line.sku!r} does not exist")
                lowest = found.lowest_prices.get(product.sku)
                unit_value.append(product.list_price if lowest is None else min(lowest, product.list_price))
            assert product is not None
            if line.replacement_sku is not None:
                replacement = products.get(line.replacement_sku)
                if replacement is None:
                    raise UnknownReferenceError(
                        f"line {position}: replacement {line.replacement_sku!r} does not exist"
                    )
                if request.refund_method != "exchange":
                    raise InvalidRequestError(
                        f"line {position}: a replacement needs refund_method 'exchange'"
                    )
            elif request.refund_method == "exchange":
                raise InvalidRequestError(f"line {position}: an exchange needs a replacement_sku")
            lines.append((line, ordered, product))
        count, refunded, receiptless = 0, ZERO, 0
        if customer_id is not None:
            count = found.returns_in_window
            refunded = found.refunded_in_window
            receiptless = found.receiptless_in_window
        return RequestContext(now, order, lines, customer_id, count, refunded, receiptless, unit_value)

    def assess(self, request: CreateReturn, context: RequestContext) -> Assessment:
        """Policy rules (hard violations deny, soft ones send to review), then the scorer if any."""
        assessment = self.policy_assessment(request, context)
        if self.scorer is not None:
            assessment = self.scorer.assess(self.session, request, context, assessment)
        return assessment

    def assess_many(self, items: Sequence[tuple[CreateReturn, RequestContext]]) -> list[Assessment]:
        """`assess` for several requests: the policy for each, then the scorer for all of them at once."""
        decided = [(request, context, self.policy_assessment(request, context)) for request, context in items]
        if self.scorer is None:
            return [assessment for _, _, assessment in decided]
        return self.scorer.assess_many(self.session, decided)

    def policy_assessment(self, request: CreateReturn, context: RequestContext) -> Assessment:
        """The policy rules alone: hard violations deny, soft ones send to review."""
        policy, reasons = self.policy, []
        for position, (_line, _ordered, product) in enumerate(context.lines, start=1):
            if not (product.returnable and policy.is_returnable(product.category)):
                reasons.append(
                    Reason(
                        "not_returnable",
                        f"line {position}: {product.category} items cannot be returned",
                        "deny",
                    )
                )
                continue
            if context.order is not None:
                window = min(policy.window_days(product.category), product.return_window_days)
                age = (context.now - context.order.placed_at).total_seconds() / 86400
                if age > window:
                    reasons.append(
                        Reason(
                            "outside_window",
                            f"line {position}: bought {age:.0f} days ago, the window is {window} days",
                            "deny",
                        )
                    )
        if context.order is None:
            if not policy.receiptless_allowed(request.channel):
                reasons.append(
                    Reason(
                        "receiptless_channel",
                        f"receiptless returns are not accepted via {request.channel}",
                        "deny",
                    )
                )
            if context.value > policy.receiptless.max_value:
                reasons.append(
                    Reason(
                        "receiptless_value",
                        f"receiptless value {context.value} exceeds {policy.receiptless.max_value}",
                        "deny",
                    )
                )
            if context.receiptless_in_window >= policy.receiptless.max_per_customer:
                reasons.append(
                    Reason(
                        "receiptless_limit",
                        f"{context.receiptless_in_window} receiptless returns in the last {policy.receiptless.per_customer_days} days "
                        f"(limit {policy.receiptless.max_per_customer})",
                        "deny",
                    )
                )
        velocity = policy.velocity
        returns_now = context.returns_in_window + 1
        value_now = context.refunded_in_window + context.value
        if policy.velocity_exceeded(returns_now, value_now):
            reasons.append(
                Reason(
                    "velocity",
                    f"{returns_now} returns worth {value_now} in {velocity.window_days} days "
                    f"(limits {velocity.max_returns} returns, {velocity.max_refund_value})",
                    "review",
                )
            )
        decision = (
            "deny" if any(r.severity == "deny" for r in reasons) else "review" if reasons else "approve"
        )
        return Assessment(decision, tuple(reasons))

    def create(self, request: CreateReturn, actor: str) -> Return:
        self.lock_order(request.order_id)
        context = self.context(request)
        assessment = self.assess(request, context)
        return self.create_assessed(request, context, assessment, actor)

    def create_assessed(
        self, request: CreateReturn, context: RequestContext, assessment: Assessment, actor: str
    ) -> Return:
        session, now = self.session, context.now
        return_id = request.return_id or f"R-{uuid.uuid4().hex[:12].upper()}"
        if session.get(Return, return_id) is not None:
            raise ConflictError(f"return {return_id} already exists")
        header = Return(
            return_id=return_id,
            order_id=context.order.order_id if context.order is not None else None,
            customer_id=context.customer_id,
            channel=request.channel,
            location_id=request.location_id,
            requested_at=now,
            employee_id=request.employee_id,
            status="requested",
            refund_method=request.refund_method,
            version=1,
            updated_at=now,
            decision=assessment.decision,
            decision_reasons=[r.as_dict() for r in assessment.reasons],
            policy_version=self.policy.version,
        )
        session.add(header)
        for line_no, (line, ordered, product) in enumerate(context.lines, start=1):
            session.add(
                ReturnLine(
                    return_id=return_id,
                    line_no=line_no,
                    order_id=header.order_id,
                    order_line_no=ordered.line_no if ordered is not None else None,
                    sku=product.sku,
                    quantity=line.quantity,
                    reason=line.reason,
                    condition=line.condition,
                    replacement_sku=line.replacement_sku,
                )
            )
        session.flush()
        payload = {
            "decision": assessment.decision,
            "reasons": [r.as_dict() for r in assessment.reasons],
            "score": assessment.score,
            "model_version": assessment.model_version,
            "degraded": assessment.degraded,
            "policy_version": self.policy.version,
        }
        self._event(
            header,
            "requested",
            None,
            "requested",
            actor,
            {"lines": len(context.lines), "channel": request.channel},
        )
        if assessment.decision == "approve":
            self._authorize(header, actor, payload)
        elif assessment.decision == "review":
            self._move(header, "hold", actor, payload)
            self._notify(header, "return_pending_review", {})
        else:
            self._move(header, "reject", actor, payload)
            self._notify(header, "return_rejected", {"reasons": payload["reasons"]})
        if request.receive_now and header.status == "authorized":
            self.receive(return_id, actor, location_id=request.location_id)
            if request.refund_now and header.status == "received":  # not while a payment is due
                self.refund(return_id, actor)
        session.flush()
        return header

    # transitions -------------------------------------------------------------------------------------

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

    def refund(self, return_id: str, actor: str) -> Refund:
        header = self.get(return_id, lock=True)
        if header.status not in ("received", "inspected"):
            raise IllegalTransitionError(
                f"return {return_id} is {header.status}; refunds are issued once it is received"
            )
        if (
            self.session.execute(select(Refund.refund_id).where(Refund.return_id == return_id)).first()
            is not None
        ) or header.refunded_at is not None:
            raise IllegalTransitionError(f"return {return_id} was already refunded")
        review = analyst_review(self.session, return_id)
        if review is not None and review.outcome in enums.FRAUD_OUTCOMES:
            raise RefundHeldError(
                f"the refund of return {return_id} is held: {review.reviewer or 'an analyst'} decided it "
                f"{review.outcome} ({review.fraud_type or 'no type'}) on {review.reviewed_at:%Y-%m-%d}"
            )
        now = self.now()
        lines = [line for line in self.lines(return_id) if line.received_quantity]
        refund_lines = [line for line in lines if line.replacement_sku is None]
        exchanges = {
            e.line_no: e
            for e in self.session.execute(select(Exchange).where(Exchange.return_id == return_id)).scalars()
        }
        allocations: list[tuple[str | None, str, Decimal]] = []
        merchandise = shipping = fee = ZERO
        points = 0
        per_line: dict[int, Decimal] = {}
        if header.order_id is not None and refund_lines:
            order = self._order_snapshot(header.order_id)
            prior = self._prior_refunds(header.order_id, exclude=return_id, order=order)
            quote = refunds.quote_refund(
                self.policy,
                order,
                [
                    refunds.ReturnItem(
                        line_no=line.order_line_no,
                        quantity=line.received_quantity,
                        reason=line.reason,
                        condition=line.condition,
                    )
                    for line in refund_lines
                ],  # type: ignore[arg-type]
                prior,
            )
            merchandise, shipping, fee = quote.merchandise, quote.shipping, quote.restocking_fee
            per_line = {
                line.line_no: part.merchandise for line, part in zip(refund_lines, quote.lines, strict=True)
            }
            allocations = [(a.payment_id, a.method, a.amount) for a in quote.allocations]
            if quote.new_store_credit:
                allocations.append((None, "store_credit", quote.new_store_credit))
            points = quote.loyalty_points_clawback
            if header.refund_method in ("store_credit", "cash") and allocations:
                # the customer asked for another form than the original tenders: same amount, one tender
                total = sum((a[2] for a in allocations), ZERO)
                allocations = [(None, header.refund_method, total)]
        elif refund_lines:
            for line in refund_lines:
                product = self.session.get(Product, line.sku)
                assert product is not None
                quote = refunds.quote_receiptless(
                    self.policy,
                    lowest_price=self._lowest_recent_price(product, header.requested_at),
                    quantity=line.received_quantity or 1,
                    channel=header.channel,
                    category=product.category,
                )
                per_line[line.line_no] = quote.total
                merchandise += quote.total
            method = "cash" if header.refund_method == "cash" else "store_credit"
            if merchandise:
                allocations = [(None, method, merchandise)]
        # uneven exchanges cheaper than the returned unit: the difference comes back as store credit
        credit_back = sum((-e.price_difference for e in exchanges.values() if e.price_difference < 0), ZERO)
        if credit_back:
            allocations.append((None, "store_credit", credit_back))
        total = merchandise + shipping - fee + credit_back
        refund = Refund(
            refund_id=f"RF-{uuid.uuid4().hex[:12].upper()}",
            return_id=return_id,
            created_at=now,
            method=_tender_used(allocations, header.refund_method, bool(exchanges)),
            merchandise_amount=merchandise + credit_back,
            shipping_amount=shipping,
            restocking_fee=fee,
            amount=total,
        )
        self.session.add(refund)
        self.session.flush()
        for payment_id, method, amount in allocations:
            if amount > 0:
                self.session.add(
                    RefundAllocation(
                        refund_id=refund.refund_id, payment_id=payment_id, method=method, amount=amount
                    )
                )
        for line in lines:
            line.refund_amount = per_line.get(line.line_no, ZERO)
        if points and header.customer_id is not None:
            self.session.add(
                LoyaltyLedger(
                    customer_id=header.customer_id,
                    at=now,
                    points=-points,
                    reason="refund_clawback",
                    order_id=header.order_id,
                    return_id=return_id,
                )
            )
        header.updated_at = now
        payload = {
            "refund_id": refund.refund_id,
            "amount": str(total),
            "merchandise": str(merchandise),
            "shipping": str(shipping),
            "restocking_fee": str(fee),
            "allocations": [
                {"payment_id": p, "method": m, "amount": str(a)} for p, m, a in allocations if a > 0
            ],
            "loyalty_points_clawback": points,
        }
        header.refunded_at = now
        self._event(header, "refunded", header.status, header.status, actor, payload)
        if total > 0:
            self._notify(header, "refund_issued", payload)
        self._complete_if_done(header, actor)
        self.session.flush()
        return refund

    def cancel(self, return_id: str, actor: str, reason: str | None = None) -> Return:
        header = self.get(return_id, lock=True)
        self._move(header, "cancel", actor, {"reason": reason})
        self.session.flush()
        return header

    def expire(self, return_id: str, actor: str) -> Return:
        header = self.get(return_id, lock=True)
        self._move(header, "expire", actor, {})
        self.session.flush()
        return header

    def decide(
        self,
        return_id: str,
        analyst: str,
        outcome: str,
        *,
        action: str | None = None,
        fraud_type: str | None = None,
        note: str | None = None,
        source: str | None = None,
    ) -> FraudReview:
        """An analyst's decision: a label for the return and, if it is pending review, authorise or reject.

        Fraud and abuse need a `fraud_type` (`enums.FRAUD_TYPES`). `source` is where the flag came from
        (the model's queue, a rule, the random audit); by default `model_flag` when the return was held
        on its fraud score, else `rule_flag`. One analyst decision per return: a second one (by anyone)
        is refused.
        """
        if outcome not in enums.REVIEW_OUTCOMES:
            raise InvalidRequestError(f"outcome {outcome!r} is not one of {', '.join(enums.REVIEW_OUTCOMES)}")
        if outcome == "legitimate":
            fraud_type = None
        elif fraud_type not in enums.FRAUD_TYPES:
            raise InvalidRequestError(
                f"a {outcome} decision needs a fraud_type, one of {', '.join(enums.FRAUD_TYPES)}"
                + (f" (got {fraud_type!r})" if fraud_type else "")
            )
        if source is not None and source not in enums.ANALYST_SOURCES:
            raise InvalidRequestError(f"source {source!r} is not one of {', '.join(enums.ANALYST_SOURCES)}")
        header = self.get(return_id, lock=True)
        already = analyst_review(self.session, return_id)
        if already is not None:
            raise IllegalTransitionError(
                f"return {return_id} was already decided by {already.reviewer or 'an analyst'}"
            )
        now = self.now()
        flagged_by_model = any(r.get("code") == "fraud_score" for r in (header.decision_reasons or []))
        review = FraudReview(
            return_id=return_id,
            reviewed_at=now,
            outcome=outcome,
            fraud_type=fraud_type,
            source=source or ("model_flag" if flagged_by_model else "rule_flag"),
            reviewer=analyst,
            note=note,
        )
        self.session.add(review)
        payload = {"outcome": outcome, "fraud_type": fraud_type, "note": note}
        if header.status == "pending_review":
            action = action or ("authorize" if outcome == "legitimate" else "reject")
            if action not in ("authorize", "reject"):
                raise InvalidRequestError(f"action {action!r} must be authorize or reject")
            if action == "authorize":
                self._authorize(header, analyst, payload)
            else:
                self._move(header, "reject", analyst, payload)
                self._notify(
                    header,
                    "return_rejected",
                    {"reasons": [{"code": "review", "message": "declined after review"}]},
                )
        else:
            if action is not None:
                raise IllegalTransitionError(
                    f"return {return_id} is {header.status}, not pending review: only a label can be recorded"
                )
            header.updated_at = now
            self._event(header, "reviewed", header.status, header.status, analyst, payload)
        self.session.flush()
        return review

    # side effects ------------------------------------------------------------------------------------

    def _authorize(self, header: Return, actor: str, payload: dict[str, Any]) -> None:
        header.rma_number = header.rma_number or f"RMA-{secrets.token_hex(4).upper()}"
        self._move(header, "authorize", actor, {**payload, "rma_number": header.rma_number})
        self._notify(header, "return_authorized", {"rma_number": header.rma_number})

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

    def _movement(
        self,
        location: str,
        sku: str,
        bucket: str,
        quantity: int,
        reason: str,
        line: ReturnLine,
        at: dt.datetime,
    ) -> None:
        self.session.add(
            InventoryMovement(
                at=at,
                location_id=location,
                sku=sku,
                bucket=bucket,
                quantity=quantity,
                reason=reason,
                return_id=line.return_id,
                return_line_no=line.line_no,
            )
        )

    def _notify(self, header: Return, kind: str, payload: dict[str, Any]) -> None:
        now = self.now()
        body = {
            "return_id": header.return_id,
            "customer_id": header.customer_id,
            "status": header.status,
            **payload,
        }
        self.session.add(
            NotificationOutbox(
                event_id=str(uuid.uuid4()),
                created_at=now,
                return_id=header.return_id,
                kind=kind,
                payload=body,
                state="pending",
                attempts=0,
                next_attempt_at=now,
            )
        )

    def _complete_if_done(self, header: Return, actor: str) -> None:
        if header.status != "inspected":
            return
        lines = [line for line in self.lines(header.return_id) if line.received_quantity]
        refunded = (
            self.session.execute(select(Refund.refund_id).where(Refund.return_id == header.return_id)).first()
            is not None
        )
        if refunded and all(line.disposition is not None for line in lines):
            self._move(header, "complete", actor, {})
            self._notify(header, "return_completed", {})

    # mechanics ---------------------------------------------------------------------------------------

    def _now(self, requested_at: dt.datetime | None) -> dt.datetime:
        return requested_at.astimezone(dt.UTC) if requested_at is not None else self.now()

    def _check(self, header: Return, command: str) -> str:
        target = TRANSITIONS.get(header.status, {}).get(command)
        if target is None:
            allowed = ", ".join(TRANSITIONS.get(header.status, {})) or "nothing"
            raise IllegalTransitionError(
                f"return {header.return_id} is {header.status}: cannot {command} (allowed: {allowed})"
            )
        return target

    def _move(self, header: Return, command: str, actor: str, payload: dict[str, Any]) -> None:
        target = self._check(header, command)
        previous = header.status
        header.status = target
        header.updated_at = self.now()
        self._event(
            header, command if command != "hold" else "held_for_review", previous, target, actor, payload
        )

    def _event(
        self,
        header: Return,
        kind: str,
        previous: str | None,
        target: str | None,
        actor: str,
        payload: dict[str, Any],
    ) -> None:
        seq = self.session.execute(
            select(func.coalesce(func.max(ReturnEvent.seq), 0)).where(
                ReturnEvent.return_id == header.return_id
            )
        ).scalar_one()
        self.session.add(
            ReturnEvent(
                return_id=header.return_id,
                seq=seq + 1,
                at=self.now(),
                actor=actor,
                kind=kind,
                from_status=previous,
                to_status=target,
                payload=_jsonable(payload),
            )
        )
        try:
            self.session.flush()
        except StaleDataError as exc:
            raise ConflictError(
                f"return {header.return_id} was changed by someone else; re-read it and retry"
            ) from exc

    def _lowest_recent_price(self, product: Product, now: dt.datetime) -> Decimal:
        """The lowest price a unit of this sku sold for in the policy's lookback (list price if none)."""
        db = Driver(self.session.connection())
        fragment, params = db.in_list("skus", [product.sku])
        since = now - dt.timedelta(days=self.policy.receiptless.lowest_price_days)
        found = db.run(
            [
                (
                    context_reads.LOWEST_PRICES.format(skus=fragment),
                    {**params, "since": db.time(since), "now": db.time(now)},
                )
            ]
        )[0]
        lowest = context_reads.rows_lowest(found).get(product.sku)
        return product.list_price if lowest is None else min(lowest, product.list_price)

    def _order_snapshot(self, order_id: str) -> refunds.OrderSnapshot:
        order = self.session.get(Order, order_id)
        assert order is not None
        rows = self.session.execute(
            select(OrderLine, Product.category)
            .join(Product, Product.sku == OrderLine.sku)
            .where(OrderLine.order_id == order_id)
        ).all()
        payments = self.session.execute(
            select(Payment).where(Payment.order_id == order_id).order_by(Payment.payment_id)
        ).scalars()
        earned = self.session.execute(
            select(func.sum(LoyaltyLedger.points)).where(
                LoyaltyLedger.order_id == order_id, LoyaltyLedger.points > 0
            )
        ).scalar_one()
        return refunds.OrderSnapshot(
            order_id=order_id,
            lines=tuple(
                refunds.OrderLine(
                    line_no=line.line_no,
                    sku=line.sku,
                    category=category,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    discount=line.discount,
                )
                for line, category in rows
            ),
            payments=tuple(
                refunds.Payment(payment_id=p.payment_id, method=p.method, amount=p.amount) for p in payments
            ),
            shipping_amount=order.shipping_amount,
            loyalty_points_earned=int(earned) if earned is not None else None,
        )

    def _prior_refunds(
        self, order_id: str, *, exclude: str, order: refunds.OrderSnapshot
    ) -> refunds.PriorRefunds:
        """What earlier returns of this order already gave back (units, money per tender, shipping, points).

        Imported history has refund amounts but no tender records: those amounts are taken to have gone
        back in the policy's tender priority, so caps per tender and per order still hold.
        """
        rows = self.session.execute(
            select(
                ReturnLine.return_id,
                ReturnLine.order_line_no,
                ReturnLine.quantity,
                ReturnLine.received_quantity,
                ReturnLine.refund_amount,
            )
            .join(Return, Return.return_id == ReturnLine.return_id)
            .where(ReturnLine.order_id == order_id, Return.return_id != exclude, Return.status.not_in(CLOSED))
        ).all()
        units: dict[int, int] = defaultdict(int)
        merchandise: dict[int, Decimal] = defaultdict(lambda: ZERO)
        untracked = ZERO
        refunded_returns = set(
            self.session.execute(
                select(Refund.return_id)
                .join(Return, Return.return_id == Refund.return_id)
                .where(Return.order_id == order_id)
            ).scalars()
        )
        capacity = {line.line_no: line.quantity for line in order.lines}
        for return_id, line_no, quantity, received, amount in rows:
            if line_no is None:
                continue
            taken = received if received is not None else quantity
            taken = min(taken, capacity[line_no] - units[line_no])
            if taken <= 0:
                continue
            units[line_no] += taken
            if amount is not None:
                merchandise[line_no] += amount
                if return_id not in refunded_returns:
                    untracked += amount
        for line in order.lines:
            merchandise[line.line_no] = min(merchandise[line.line_no], line.paid)
        tenders: dict[str, Decimal] = defaultdict(lambda: ZERO)
        tracked = self.session.execute(
            select(RefundAllocation.payment_id, func.sum(RefundAllocation.amount))
            .join(Refund, Refund.refund_id == RefundAllocation.refund_id)
            .join(Return, Return.return_id == Refund.return_id)
            .where(
                Return.order_id == order_id,
                Return.return_id != exclude,
                RefundAllocation.payment_id.is_not(None),
            )
            .group_by(RefundAllocation.payment_id)
        ).all()
        for payment_id, amount in tracked:
            tenders[payment_id] += Decimal(str(amount)).quantize(CENT)
        for payment in sorted(order.payments, key=lambda p: self.policy.tender_rank(p.method)):
            room = payment.amount - tenders[payment.payment_id]
            take = min(room, untracked)
            if take > 0:
                tenders[payment.payment_id] += take
                untracked -= take
        shipping = self.session.execute(
            select(func.coalesce(func.sum(Refund.shipping_amount), 0))
            .join(Return, Return.return_id == Refund.return_id)
            .where(Return.order_id == order_id, Return.return_id != exclude)
        ).scalar_one()
        clawed = self.session.execute(
            select(func.coalesce(func.sum(LoyaltyLedger.points), 0)).where(
                LoyaltyLedger.order_id == order_id, LoyaltyLedger.reason == "refund_clawback"
            )
        ).scalar_one()
        return refunds.PriorRefunds(
            units={k: v for k, v in units.items() if v},
            merchandise={k: v for k, v in merchandise.items() if k in units},
            tenders={
                k: min(v, next(p.amount for p in order.payments if p.payment_id == k))
                for k, v in tenders.items()
            },
            shipping=min(Decimal(str(shipping)).quantize(CENT), order.shipping_amount),
            loyalty_points=-int(clawed),
        )

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


# --- queries -------------------------------------------------------------------------------------


def analyst_review(session: Session, return_id: str) -> FraudReview | None:
    """The analyst's decision on a return (`enums.ANALYST_SOURCES`; a chargeback is not one), if any."""
    return session.execute(
        select(FraudReview)
        .where(FraudReview.return_id == return_id, FraudReview.source.in_(enums.ANALYST_SOURCES))
        .order_by(FraudReview.reviewed_at.desc())
        .limit(1)
    ).scalar_one_or_none()


def amount_due(session: Session, return_id: str) -> Decimal:
    """What the customer owes for exchanges dearer than the returned items (0 once paid)."""
    if session.get(ExchangePayment, return_id) is not None:
        return ZERO
    owed = session.execute(
        select(func.coalesce(func.sum(Exchange.price_difference), 0)).where(
            Exchange.return_id == return_id, Exchange.price_difference > 0
        )
    ).scalar_one()
    return Decimal(owed).quantize(CENT)


def count_stock(
    session: Session, location_id: str, sku: str, sellable: int, *, at: dt.datetime | None = None
) -> dict[str, int]:
    """A stock count: the location's sellable units of `sku` are `sellable` from now on, written as a
    `stock_count` movement of the difference (none when the ledger already agrees). Returns the stock."""
    if sellable < 0:
        raise InvalidRequestError(f"a stock count cannot be negative, got {sellable}")
    if session.get(Location, location_id) is None:
        raise NotFoundError(f"location {location_id!r} does not exist")
    # the product row locked: a count and an exchange of the same sku do not interleave
    if session.get(Product, sku, with_for_update=True) is None:
        raise NotFoundError(f"product {sku!r} does not exist")
    difference = sellable - stock(session, location_id, sku).get("sellable", 0)
    if difference:
        session.add(
            InventoryMovement(
                at=at or dt.datetime.now(dt.UTC),
                location_id=location_id,
                sku=sku,
                bucket="sellable",
                quantity=difference,
                reason="stock_count",
            )
        )
        session.flush()
    return stock(session, location_id, sku)


def stock(session: Session, location_id: str, sku: str) -> dict[str, int]:
    """Units per bucket at a location: the sum of the movements ledger."""
    rows = session.execute(
        select(InventoryMovement.bucket, func.sum(InventoryMovement.quantity))
        .where(InventoryMovement.location_id == location_id, InventoryMovement.sku == sku)
        .group_by(InventoryMovement.bucket)
    ).all()
    return {bucket: int(quantity) for bucket, quantity in rows}


@dataclass(frozen=True)
class LimboItem:
    return_id: str
    line_no: int
    location_id: str
    sku: str
    quantity: int
    received_at: dt.datetime
    age_days: float


def limbo(
    session: Session, now: dt.datetime | None = None, location_id: str | None = None
) -> list[LimboItem]:
    """Units received but not yet disposed, with their age, oldest first: lines of returns received at
    a location and still open (not completed, rejected, cancelled or expired) without a disposition;
    their units are those received, or, for imported history that does not record them, the line's.
    The operations page's limbo (`features.analytics.limbo_lines`) is the same rule on the same rows."""
    now = now or utcnow()
    units = func.coalesce(ReturnLine.received_quantity, ReturnLine.quantity)
    query = (
        select(
            ReturnLine.return_id,
            ReturnLine.line_no,
            Return.location_id,
            ReturnLine.sku,
            units,
            Return.received_at,
        )
        .join(Return, Return.return_id == ReturnLine.return_id)
        .where(
            units > 0,
            ReturnLine.disposition.is_(None),
            Return.received_at.is_not(None),
            Return.status.not_in((*CLOSED, "completed")),
        )
        .order_by(Return.received_at, ReturnLine.return_id, ReturnLine.line_no)
    )
    if location_id is not None:
        query = query.where(Return.location_id == location_id)
    return [
        LimboItem(r, n, loc, sku, q, at, (now - at).total_seconds() / 86400)
        for r, n, loc, sku, q, at in session.execute(query).all()
    ]


def timeline(session: Session, return_id: str) -> Sequence[ReturnEvent]:
    return (
        session.execute(
            select(ReturnEvent).where(ReturnEvent.return_id == return_id).order_by(ReturnEvent.seq)
        )
        .scalars()
        .all()
    )


def _tender_used(
    allocations: list[tuple[str | None, str, Decimal]], asked: str | None, exchanged: bool
) -> str:
    """The refund method a refund row names: what its money went to (each tender is in its allocations).

    Original tenders (allocations with a payment) read `original_tender`; otherwise the one form used,
    the larger when two were (a receiptless refund in cash plus an exchange's difference as credit); a
    refund of nothing is an exchange's, or what was asked."""
    paid = [
        (method, amount) for payment_id, method, amount in allocations if amount > 0 and payment_id is None
    ]
    if any(payment_id is not None and amount > 0 for payment_id, _, amount in allocations):
        return "original_tender"
    if paid:
        return max(paid, key=lambda item: item[1])[0]
    return "exchange" if exchanged else asked or "original_tender"


def _paid_per_unit(line: OrderLine | OrderedLine) -> Decimal:
    return ((line.unit_price * line.quantity - line.discount) / line.quantity).quantize(
        CENT, rounding="ROUND_FLOOR"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
