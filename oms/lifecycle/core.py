"""What every stage of the lifecycle shares: the domain errors, the request types, and `Stage`, the
base each stage module extends (the session and policy, reading a return, and the helpers that write an
event, an inventory movement and an outbox notification with every change); also the read-only lookups
(`analyst_review`, `amount_due`, `stock`, `limbo`, `timeline`) and `count_stock`."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from oms import enums
from oms.context_reads import OrderedLine, OrderRef, ProductRef
from oms.disposition import (
    DispositionChooser,
    StaticChooser,
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
    NotificationOutbox,
    Order,
    OrderLine,
    Product,
    Refund,
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


class Stage:
    """The session, policy and clock a stage works with, and the helpers every stage's commands share."""

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
