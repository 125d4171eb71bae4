"""The return lifecycle as a domain service: transitions, events, money, inventory, notifications."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from oms.disposition import InfeasibleDispositionError
from oms.lifecycle import (
    CreateReturn,
    IllegalTransitionError,
    InsufficientStockError,
    InvalidRequestError,
    LineRequest,
    RefundHeldError,
    ReturnService,
    amount_due,
    count_stock,
    limbo,
    stock,
    timeline,
)
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from oms.tables import (
    Exchange,
    FraudReview,
    InventoryMovement,
    LoyaltyLedger,
    NotificationOutbox,
    Refund,
    RefundAllocation,
    ReturnLine,
)
from tests.factories import NOW, load_lifecycle_world

CLOCK = dt.datetime.fromisoformat(NOW.replace("Z", "+00:00"))


@pytest.fixture
def session(connection: Connection, tmp_path: Path) -> Session:
    load_lifecycle_world(connection, tmp_path / "world")
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        yield session


@pytest.fixture
def service(session: Session) -> ReturnService:
    return ReturnService(session, load_policy(DEFAULT_POLICY_PATH), now=lambda: CLOCK)


def _outbox(session: Session, return_id: str) -> list[str]:
    rows = session.execute(
        select(NotificationOutbox.kind)
        .where(NotificationOutbox.return_id == return_id)
        .order_by(NotificationOutbox.created_at)
    )
    return [kind for (kind,) in rows]


def _web_return(**overrides) -> CreateReturn:
    values = dict(
        channel="mail",
        order_id="W-1001",
        location_id="W1",
        lines=(LineRequest(order_line_no=2, quantity=1, reason="doesnt_fit"),),
    )
    values.update(overrides)
    return CreateReturn(**values)


def test_remote_return_runs_the_whole_lifecycle(service: ReturnService, session: Session) -> None:
    header = service.create(_web_return(), "till:1")
    assert header.status == "authorized" and header.rma_number.startswith("RMA-")
    assert header.decision == "approve" and header.customer_id == "ALICE"
    service.receive(header.return_id, "warehouse:7")
    assert stock(session, "W1", "TEE-M") == {"returns_pending": 1}
    assert [item.sku for item in limbo(session, CLOCK)] == ["TEE-M"]
    service.inspect(header.return_id, {1: "new"}, "warehouse:7")
    service.dispose(header.return_id, "warehouse:7")
    assert stock(session, "W1", "TEE-M") == {"returns_pending": 0, "sellable": 1}
    assert limbo(session, CLOCK) == []
    refund = service.refund(header.return_id, "finance")
    assert header.status == "completed"
    # one T-shirt of two bought at 25.00 with 10.00 promotion on the line: 20.00 paid per unit
    assert refund.amount == Decimal("20.00") and refund.shipping_amount == Decimal("0.00")
    allocations = (
        session.execute(select(RefundAllocation).where(RefundAllocation.refund_id == refund.refund_id))
        .scalars()
        .all()
    )
    assert [(a.payment_id, a.amount) for a in allocations] == [("W-1001-GC", Decimal("20.00"))]
    clawback = session.execute(
        select(LoyaltyLedger.points).where(LoyaltyLedger.return_id == header.return_id)
    ).scalar_one()
    assert clawback == -19  # 173 points earned on 173.20 paid: floor(173 x 20.00 / 173.20)
    events = timeline(session, header.return_id)
    assert [(e.kind, e.from_status, e.to_status) for e in events] == [
        ("requested", None, "requested"),
        ("authorize", "requested", "authorized"),
        ("receive", "authorized", "received"),
        ("inspect", "received", "inspected"),
        ("disposed", "inspected", "inspected"),
        ("refunded", "inspected", "inspected"),
        ("complete", "inspected", "completed"),
    ]
    assert [e.seq for e in events] == list(range(1, 8))
    assert {e.actor for e in events} == {"till:1", "warehouse:7", "finance"}
    assert _outbox(session, header.return_id) == [
        "return_authorized",
        "return_received",
        "refund_issued",
        "return_completed",
    ]


def test_store_return_is_requested_decided_received_and_refunded_in_one_call(
    service: ReturnService, session: Session
) -> None:
    request = CreateReturn(
        channel="store",
        order_id="S-2001",
        location_id="S1",
        employee_id="E1",
        lines=(LineRequest(order_line_no=1, quantity=2, reason="changed_mind", condition="new"),),
        receive_now=True,
        refund_now=True,
    )
    header = service.create(request, "till:S1")
    assert header.status == "received"
    refund = session.execute(select(Refund).where(Refund.return_id == header.return_id)).scalar_one()
    assert refund.amount == Decimal("50.00")
    assert stock(session, "S1", "TEE-M") == {"returns_pending": 2}
    kinds = [e.kind for e in timeline(session, header.return_id)]
    assert kinds == ["requested", "authorize", "receive", "refunded"]


def test_readme_example_boris_with_promotion_split_tender_fee_and_clawback(
    service: ReturnService, session: Session
) -> None:
    """Bought online (three lines, 20 % promotion, gift card + card), one line returned in store."""
    request = CreateReturn(
        channel="store",
        order_id="W-1001",
        location_id="S1",
        employee_id="E7",
        lines=(LineRequest(order_line_no=1, quantity=1, reason="changed_mind", condition="open_box"),),
        receive_now=True,
        refund_now=True,
    )
    header = service.create(request, "till:S1")
    refund = session.execute(select(Refund).where(Refund.return_id == header.return_id)).scalar_one()
    assert (refund.merchandise_amount, refund.shipping_amount, refund.restocking_fee, refund.amount) == (
        Decimal("103.20"),
        Decimal("0.00"),
        Decimal("15.48"),
        Decimal("87.72"),
    )
    allocations = session.execute(
        select(RefundAllocation.payment_id, RefundAllocation.method, RefundAllocation.amount)
        .where(RefundAllocation.refund_id == refund.refund_id)
        .order_by(RefundAllocation.allocation_id)
    ).all()
    assert allocations == [
        ("W-1001-GC", "gift_card", Decimal("50.00")),
        ("W-1001-CARD", "card", Decimal("37.72")),
    ]
    points = session.execute(
        select(LoyaltyLedger.points).where(LoyaltyLedger.return_id == header.return_id)
    ).scalar_one()
    assert points == -103
    service.inspect(header.return_id, {1: "open_box"}, "store:S1")
    service.dispose(header.return_id, "store:S1")
    movements = session.execute(
        select(
            InventoryMovement.location_id,
            InventoryMovement.sku,
            InventoryMovement.bucket,
            InventoryMovement.quantity,
            InventoryMovement.reason,
        )
        .where(InventoryMovement.return_id == header.return_id)
        .order_by(InventoryMovement.movement_id)
    ).all()
    assert movements == [
        ("S1", "EARBUDS", "returns_pending", 1, "return_received"),
        ("S1", "EARBUDS", "returns_pending", -1, "disposed_open_box"),
        ("S1", "EARBUDS", "sellable", 1, "disposed_open_box"),
    ]
    assert header.status == "completed"


def test_illegal_transitions_are_refused(service: ReturnService) -> None:
    header = service.create(_web_return(), "till")
    with pytest.raises(IllegalTransitionError, match="authorized: cannot inspect"):
        service.inspect(header.return_id, {1: "new"}, "x")
    with pytest.raises(IllegalTransitionError):
        service.refund(header.return_id, "x")
    service.receive(header.return_id, "x")
    with pytest.raises(IllegalTransitionError, match="received: cannot receive"):
        service.receive(header.return_id, "x")
    with pytest.raises(IllegalTransitionError, match="cannot cancel"):
        service.cancel(header.return_id, "x")
    service.refund(header.return_id, "x")
    with pytest.raises(IllegalTransitionError, match="already refunded"):
        service.refund(header.return_id, "x")


def test_policy_rejects_and_holds_with_reasons(service: ReturnService, session: Session) -> None:
    late = service.create(
        _web_return(
            order_id="W-0900", lines=(LineRequest(order_line_no=1, quantity=1, reason="changed_mind"),)
        ),
        "t",
    )
    assert late.status == "rejected" and late.decision == "deny"
    assert late.decision_reasons[0]["code"] == "outside_window"
    assert _outbox(session, late.return_id) == ["return_rejected"]
    gift = service.create(
        CreateReturn(
            channel="store",
            order_id="S-2001",
            location_id="S1",
            lines=(LineRequest(order_line_no=2, quantity=1, reason="changed_mind"),),
        ),
        "t",
    )
    assert gift.status == "rejected" and gift.decision_reasons[0]["code"] == "not_returnable"
    receiptless_web = service.create(
        CreateReturn(channel="web", lines=(LineRequest(sku="MUG", quantity=1, reason="other"),)), "t"
    )
    assert (
        receiptless_web.status == "rejected"
        and receiptless_web.decision_reasons[0]["code"] == "receiptless_channel"
    )
    receiptless_big = service.create(
        CreateReturn(
            channel="store", location_id="S1", lines=(LineRequest(sku="EARBUDS", quantity=2, reason="other"),)
        ),
        "t",
    )
    assert (
        receiptless_big.status == "rejected"
        and receiptless_big.decision_reasons[0]["code"] == "receiptless_value"
    )


def test_electronics_window_is_shorter(service: ReturnService) -> None:
    # S-2002 bought earbuds 15 days ago: outside the 14-day electronics window
    header = service.create(
        CreateReturn(
            channel="store",
            order_id="S-2002",
            location_id="S1",
            lines=(LineRequest(order_line_no=1, quantity=1, reason="changed_mind"),),
        ),
        "t",
    )
    assert (
        header.decision_reasons[0]["code"] == "outside_window"
        and "14 days" in header.decision_reasons[0]["message"]
    )


def test_velocity_sends_to_review_and_an_analyst_decides_once(
    service: ReturnService, session: Session
) -> None:
    policy = service.policy.model_copy(
        update={"velocity": service.policy.velocity.model_copy(update={"max_returns": 1})}
    )
    strict = ReturnService(session, policy, now=lambda: CLOCK)
    first = strict.create(_web_return(), "t")
    assert first.status == "authorized"
    second = strict.create(
        _web_return(lines=(LineRequest(order_line_no=3, quantity=1, reason="changed_mind"),)), "t"
    )
    assert second.status == "pending_review" and second.decision_reasons[0]["code"] == "velocity"
    review = strict.decide(second.return_id, "analyst:ann", "legitimate", note="loyal customer")
    assert second.status == "authorized" and second.rma_number
    assert (review.outcome, review.source, review.reviewer) == ("legitimate", "rule_flag", "analyst:ann")
    with pytest.raises(IllegalTransitionError, match="already decided by analyst:ann"):
        strict.decide(second.return_id, "analyst:bob", "fraud", fraud_type="wardrobing")
    with pytest.raises(InvalidRequestError, match="a fraud decision needs a fraud_type, one of wardrobing"):
        strict.decide(first.return_id, "analyst:bob", "fraud")
    with pytest.raises(InvalidRequestError, match="got 'shoplifting'"):
        strict.decide(first.return_id, "analyst:bob", "abuse", fraud_type="shoplifting")
    assert (
        session.execute(
            select(func.count()).select_from(FraudReview).where(FraudReview.return_id == second.return_id)
        ).scalar_one()
        == 1
    )


def test_an_analyst_can_reject_a_held_return(service: ReturnService, session: Session) -> None:
    policy = service.policy.model_copy(
        update={"velocity": service.policy.velocity.model_copy(update={"max_returns": 0})}
    )
    header = ReturnService(session, policy, now=lambda: CLOCK).create(_web_return(), "t")
    assert header.status == "pending_review"
    ReturnService(session, policy, now=lambda: CLOCK).decide(
        header.return_id, "analyst:ann", "abuse", fraud_type="wardrobing"
    )
    assert header.status == "rejected"
    assert _outbox(session, header.return_id) == ["return_pending_review", "return_rejected"]


def test_fraud_decided_on_an_authorised_return_holds_its_refund(
    service: ReturnService, session: Session
) -> None:
    header = service.create(_web_return(), "till:1")
    assert header.status == "authorized"
    service.decide(header.return_id, "analyst:ann", "fraud", fraud_type="empty_box", source="random_audit")
    assert header.status == "authorized"  # the label is recorded; the goods may still come back
    service.receive(header.return_id, "warehouse:7")
    with pytest.raises(
        RefundHeldError, match=r"refund of return .* is held: analyst:ann decided it fraud \(empty_box\)"
    ):
        service.refund(header.return_id, "finance")
    assert session.execute(select(func.count()).select_from(Refund)).scalar_one() == 0
    assert header.status == "received"
    # a legitimate decision holds nothing
    other = service.create(_mugs(1), "till:1")
    service.decide(other.return_id, "analyst:ann", "legitimate")
    service.receive(other.return_id, "warehouse:7")
    assert service.refund(other.return_id, "finance").amount > 0


def test_units_cannot_be_returned_twice(service: ReturnService) -> None:
    service.create(_web_return(lines=(LineRequest(order_line_no=2, quantity=2, reason="doesnt_fit"),)), "t")
    with pytest.raises(InvalidRequestError, match="only 0 of line 2 remain"):
        service.create(_web_return(), "t")


def _mugs(quantity: int) -> CreateReturn:
    return _web_return(lines=(LineRequest(order_line_no=3, quantity=quantity, reason="changed_mind"),))


def test_a_unit_asked_but_never_received_can_be_returned_again(service: ReturnService) -> None:
    """Three mugs: a return asks for 2, 1 arrives and is refunded; the third mug may still come back."""
    first = service.create(_mugs(2), "t")
    service.receive(first.return_id, "w", quantities={1: 1})
    service.inspect(first.return_id, {1: "new"}, "w")
    service.dispose(first.return_id, "w", {1: "restock"})
    service.refund(first.return_id, "w")
    assert first.status == "completed"
    with pytest.raises(InvalidRequestError, match="only 2 of line 3 remain"):
        service.create(_mugs(3), "t")
    assert service.create(_mugs(2), "t").status == "authorized"
    with pytest.raises(InvalidRequestError, match="only 0 of line 3 remain"):
        service.create(_mugs(1), "t")


_STEPS = st.lists(
    st.tuples(st.sampled_from(["ask", "receive", "cancel", "expire"]), st.integers(0, 3), st.integers(0, 3)),
    min_size=1,
    max_size=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_returnable_units_are_bought_minus_received_minus_still_open(
    session: Session, steps: list[tuple[str, int, int]]
) -> None:
    """Requests, partial receipts, cancels and expiries in any order: a request is accepted exactly when
    it fits in bought - received - asked by returns still open and not received."""
    policy = load_policy(DEFAULT_POLICY_PATH)
    policy = policy.model_copy(update={"velocity": policy.velocity.model_copy(update={"max_returns": 99})})
    service = ReturnService(session, policy, now=lambda: CLOCK)
    nested = session.begin_nested()
    try:
        returns: list[dict] = []  # id, asked, received (None until it arrives), open
        for action, pick, units in steps:
            left = 3 - sum(
                r["received"] if r["received"] is not None else (r["asked"] if r["open"] else 0)
                for r in returns
            )
            waiting = [r for r in returns if r["open"] and r["received"] is None]
            if action == "ask":
                if 1 <= units <= left:
                    header = service.create(_mugs(units), "t")
                    assert header.status == "authorized"
                    returns.append({"id": header.return_id, "asked": units, "received": None, "open": True})
                elif units >= 1:
                    with pytest.raises(InvalidRequestError, match=f"only {left} of line 3 remain"):
                        service.create(_mugs(units), "t")
            elif waiting:
                chosen = waiting[pick % len(waiting)]
                if action == "receive":
                    got = min(units, chosen["asked"])
                    if got == 0:
                        with pytest.raises(InvalidRequestError, match="nothing was received"):
                            service.receive(chosen["id"], "w", quantities={1: 0})
                    else:
                        service.receive(chosen["id"], "w", quantities={1: got})
                        chosen["received"] = got
                else:
                    getattr(service, action)(chosen["id"], "t")
                    chosen["open"] = False
    finally:
        nested.rollback()


def test_bad_requests_name_what_is_wrong(service: ReturnService) -> None:
    with pytest.raises(InvalidRequestError, match="order 'NOPE' does not exist"):
        service.create(_web_return(order_id="NOPE"), "t")
    with pytest.raises(InvalidRequestError, match="has no line 9"):
        service.create(_web_return(lines=(LineRequest(order_line_no=9, quantity=1, reason="other"),)), "t")
    with pytest.raises(InvalidRequestError, match="is not what line 2 sold"):
        service.create(
            _web_return(lines=(LineRequest(order_line_no=2, sku="MUG", quantity=1, reason="other"),)), "t"
        )
    with pytest.raises(InvalidRequestError, match="receiptless line needs its sku"):
        service.create(CreateReturn(channel="store", lines=(LineRequest(quantity=1, reason="other"),)), "t")


def test_partial_receipt_refunds_what_arrived(service: ReturnService, session: Session) -> None:
    header = service.create(
        _web_return(lines=(LineRequest(order_line_no=3, quantity=3, reason="defective"),)), "t"
    )
    service.receive(header.return_id, "w", quantities={1: 2})
    refund = service.refund(header.return_id, "f")
    # 2 of 3 mugs (30.00 paid for 3) plus their share of shipping (defective: retailer at fault)
    assert refund.merchandise_amount == Decimal("20.00")
    assert refund.shipping_amount > 0
    line = session.execute(select(ReturnLine).where(ReturnLine.return_id == header.return_id)).scalar_one()
    assert line.received_quantity == 2


def test_infeasible_disposition_is_refused(service: ReturnService) -> None:
    header = service.create(_web_return(), "t")
    service.receive(header.return_id, "w")
    service.inspect(header.return_id, {1: "empty_box"}, "w")
    with pytest.raises(InfeasibleDispositionError, match="empty box item cannot go to restock"):
        service.dispose(header.return_id, "w", {1: "restock"})
    service.dispose(header.return_id, "w")
    events = timeline(service.session, header.return_id)
    assert events[-1].payload["lines"]["1"]["disposition"] == "recycle"
    assert events[-2].payload["suspicious_lines"] == [1]


def _till_exchange(replacement: str, reason: str = "doesnt_fit", refund_now: bool = False) -> CreateReturn:
    """The first line of store order S-2001 exchanged at the till (S1) for `replacement`."""
    return CreateReturn(
        channel="store",
        order_id="S-2001",
        location_id="S1",
        refund_method="exchange",
        lines=(
            LineRequest(
                order_line_no=1, quantity=1, reason=reason, condition="new", replacement_sku=replacement
            ),
        ),
        receive_now=True,
        refund_now=refund_now,
    )


def test_even_exchange_reserves_the_replacement_at_no_charge(
    service: ReturnService, session: Session
) -> None:
    count_stock(session, "S1", "TEE-L", 3)
    request = _till_exchange("TEE-L", refund_now=True)
    header = service.create(request, "till")
    exchange = session.execute(select(Exchange).where(Exchange.return_id == header.return_id)).scalar_one()
    assert exchange.even and exchange.price_difference == Decimal("0.00")
    assert stock(session, "S1", "TEE-L") == {"sellable": 2, "reserved": 1}
    refund = session.execute(select(Refund).where(Refund.return_id == header.return_id)).scalar_one()
    assert refund.amount == Decimal("0.00") and refund.method == "exchange"
    # nothing was refunded, so no refund notice: the customer hears of the exchange instead
    assert sorted(_outbox(session, header.return_id)) == [
        "exchange_created",
        "return_authorized",
        "return_received",
    ]


def test_uneven_exchange_settles_the_difference_at_todays_price(
    service: ReturnService, session: Session
) -> None:
    request = _till_exchange("HOODIE-M", reason="changed_mind")
    count_stock(session, "S1", "HOODIE-M", 1)
    header = service.create(request, "till")
    exchange = session.execute(select(Exchange).where(Exchange.return_id == header.return_id)).scalar_one()
    assert not exchange.even and exchange.price_difference == Decimal("20.00")  # 45.00 today - 25.00 paid
    # the till collects the 20.00 before the return goes on
    assert header.status == "awaiting_payment" and amount_due(session, header.return_id) == Decimal("20.00")
    with pytest.raises(IllegalTransitionError, match="awaiting_payment: cannot inspect"):
        service.inspect(header.return_id, {1: "new"}, "w")
    with pytest.raises(InvalidRequestError, match=r"has 20\.00 due for its exchanges, not 19\.99"):
        service.record_payment(header.return_id, "till", amount=Decimal("19.99"), method="card")
    service.record_payment(header.return_id, "till", amount=Decimal("20.00"), method="card", reference="A1")
    assert header.status == "received" and amount_due(session, header.return_id) == Decimal("0.00")
    with pytest.raises(IllegalTransitionError, match="is received: cannot pay"):
        service.record_payment(header.return_id, "till", amount=Decimal("20.00"), method="card")
    kinds = [event.kind for event in timeline(session, header.return_id)]
    assert kinds[-2:] == ["await_payment", "pay"]
    service.inspect(header.return_id, {1: "new"}, "w")
    service.refund(header.return_id, "till")  # nothing to refund: the customer paid the difference
    service.dispose(header.return_id, "w")
    assert header.status == "completed"


def test_an_exchange_takes_what_the_location_has_and_says_so_when_short(
    service: ReturnService, session: Session
) -> None:
    request = _till_exchange("TEE-L")
    with pytest.raises(
        InsufficientStockError, match="location S1 has 0 sellable unit\\(s\\) of TEE-L; the exchange needs 1"
    ):
        service.create(request, "till")
    session.rollback()
    assert stock(session, "S1", "TEE-L") == {}  # nothing half-written
    assert count_stock(session, "S1", "TEE-L", 1) == {"sellable": 1}
    assert count_stock(session, "S1", "TEE-L", 1) == {"sellable": 1}  # the same count again moves nothing
    header = service.create(request, "till")
    assert header.status == "received" and stock(session, "S1", "TEE-L") == {"sellable": 0, "reserved": 1}
    with pytest.raises(InvalidRequestError, match="cannot be negative"):
        count_stock(session, "S1", "TEE-L", -1)


def test_receiptless_store_return_gets_store_credit_at_lowest_recent_price(
    service: ReturnService, session: Session
) -> None:
    header = service.create(
        CreateReturn(
            channel="store",
            location_id="S1",
            customer_id="BOB",
            lines=(LineRequest(sku="TEE-M", quantity=1, reason="changed_mind"),),
            receive_now=True,
            refund_now=True,
        ),
        "till",
    )
    refund = session.execute(select(Refund).where(Refund.return_id == header.return_id)).scalar_one()
    allocation = session.execute(
        select(RefundAllocation).where(RefundAllocation.refund_id == refund.refund_id)
    ).scalar_one()
    # TEE-M sold for 20.00 (W-1001, promotion) and 25.00 (S-2001) in the last 90 days
    assert refund.method == "store_credit"  # the tender used, though none was asked
    assert (allocation.method, allocation.payment_id, allocation.amount) == (
        "store_credit",
        None,
        Decimal("20.00"),
    )


def test_refunds_over_partial_returns_never_exceed_what_was_paid(
    service: ReturnService, session: Session
) -> None:
    for quantity in (1, 1, 1):
        header = service.create(
            _web_return(lines=(LineRequest(order_line_no=3, quantity=quantity, reason="defective"),)), "t"
        )
        service.receive(header.return_id, "w")
        service.refund(header.return_id, "f")
    total = session.execute(
        select(func.sum(RefundAllocation.amount))
        .join(Refund, Refund.refund_id == RefundAllocation.refund_id)
        .where(Refund.return_id.like("R-%"))
    ).scalar_one()
    shipping = session.execute(select(func.sum(Refund.shipping_amount))).scalar_one()
    assert total == Decimal("30.00") + shipping
    assert shipping <= Decimal("4.95")


def test_contexts_read_many_requests_at_once_and_keep_each_error_in_its_place(service: ReturnService) -> None:
    """The batched read (the scoring API's) gives each request the context it gets alone; an invalid
    request gets its own error and the others are unaffected."""
    requests = [
        _web_return(),
        _web_return(order_id="NOPE"),
        _web_return(channel="carrier_pigeon"),
        _web_return(lines=(LineRequest(order_line_no=1, quantity=1, reason="doesnt_fit"),)),
        _web_return(),
    ]
    batched = service.contexts(requests)
    assert len(batched) == len(requests)
    for request, found in zip(requests, batched, strict=True):
        try:
            alone = service.context(request)
        except InvalidRequestError as exc:
            assert isinstance(found, InvalidRequestError) and str(found) == str(exc)
            continue
        assert isinstance(found, type(alone)) and found == alone
    assert "order 'NOPE' does not exist" in str(batched[1]) and "channel" in str(batched[2])
    assert service.contexts([]) == []


def test_the_audit_trail_refuses_updates_and_deletes(service: ReturnService, session: Session) -> None:
    header = service.create(_web_return(), "till:1")
    session.flush()
    trail = text("SELECT seq, actor, to_status FROM return_events WHERE return_id = :r ORDER BY seq")
    before = session.execute(trail, {"r": header.return_id}).all()
    assert before
    for statement in (
        "UPDATE return_events SET actor = 'someone else'",
        "DELETE FROM return_events",
    ):
        nested = session.begin_nested()
        with pytest.raises(DBAPIError, match="return_events is append-only"):
            session.execute(text(statement))
        nested.rollback()
    assert session.execute(trail, {"r": header.return_id}).all() == before
