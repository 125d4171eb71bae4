"""Overlapping returns of one order, sent at the same time, never return more units than were bought nor
refund a tender more than it paid: on PostgreSQL and SQLite, over random orders, tenders and request
mixes (store returns refunded at the till, remote returns received and refunded later, concurrently)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from oms.invariants import violations
from oms.lifecycle import CreateReturn, LifecycleError, LineRequest, ReturnService
from oms.policy import load_policy
from oms.refunds import RefundError
from oms.settings import DEFAULT_POLICY_PATH
from oms.tables import Customer, Order, OrderLine, Payment, RefundAllocation, Return, ReturnLine
from oms.uow import unit_of_work
from tests.factories import NOW, load_lifecycle_world

CLOCK = dt.datetime.fromisoformat(NOW.replace("Z", "+00:00"))
POLICY = load_policy(DEFAULT_POLICY_PATH)
SKUS = ("TEE-M", "HOODIE-M", "MUG")  # 30-day window, no restocking fee for a changed mind on these
TENDERS = ("gift_card", "card", "store_credit", "cash")
CENT = Decimal("0.01")


@st.composite
def orders(draw: st.DrawFn) -> dict:
    """An order of 1-3 lines, paid by 1-3 tenders that add up to its total (with shipping)."""
    lines = []
    for line_no in range(1, draw(st.integers(1, 3)) + 1):
        quantity = draw(st.integers(1, 4))
        unit = draw(st.integers(100, 9_999))
        discount = draw(st.sampled_from([0, unit * quantity // 5]))
        lines.append((line_no, draw(st.sampled_from(SKUS)), quantity, unit, discount))
    shipping = draw(st.sampled_from([0, 495]))
    total = sum(q * u - d for _, _, q, u, d in lines) + shipping
    count = draw(st.integers(1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=count - 1, max_size=count - 1)))
    amounts = [b - a for a, b in itertools.pairwise([0, *cuts, total])]
    methods = draw(st.lists(st.sampled_from(TENDERS), min_size=count, max_size=count, unique=True))
    return {"lines": lines, "shipping": shipping, "payments": list(zip(methods, amounts, strict=True))}


@st.composite
def request_mixes(draw: st.DrawFn, order: dict) -> list[dict]:
    """2-6 returns of the order, each of some of its lines: at the store counter (received, and refunded
    at the till or not) or by mail (received and refunded later)."""
    mix = []
    for _ in range(draw(st.integers(2, 6))):
        chosen = draw(st.lists(st.sampled_from(order["lines"]), min_size=1, max_size=3, unique=True))
        mix.append(
            {
                "lines": [(line[0], draw(st.integers(1, line[2]))) for line in chosen],
                "store": draw(st.booleans()),
                "refund_now": draw(st.booleans()),
                "reason": draw(st.sampled_from(["changed_mind", "doesnt_fit", "defective"])),
            }
        )
    return mix


def _add_order(engine: Engine, order: dict) -> str:
    """The order, for a customer of its own (so no velocity limit of an earlier example holds it)."""
    suffix = uuid.uuid4().hex[:10]
    order_id, customer_id = f"O-{suffix}", f"C-{suffix}"
    cents = lambda n: (Decimal(n) / 100).quantize(CENT)  # noqa: E731
    with unit_of_work(engine) as session:
        session.add(Customer(customer_id=customer_id, created_at=CLOCK - dt.timedelta(days=400)))
        session.add(
            Order(
                order_id=order_id,
                customer_id=customer_id,
                channel="store",
                location_id="S1",
                placed_at=CLOCK - dt.timedelta(days=3),
                shipping_amount=cents(order["shipping"]),
            )
        )
        session.flush()
        for line_no, sku, quantity, unit, discount in order["lines"]:
            session.add(
                OrderLine(
                    order_id=order_id,
                    line_no=line_no,
                    sku=sku,
                    quantity=quantity,
                    unit_price=cents(unit),
                    discount=cents(discount),
                )
            )
        for position, (method, amount) in enumerate(order["payments"]):
            session.add(
                Payment(
                    payment_id=f"{order_id}-P{position}",
                    order_id=order_id,
                    method=method,
                    amount=cents(amount),
                    card_fingerprint=None,
                )
            )
    return order_id


def _all_at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls in threads released together; each call's result or the domain error it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(position: int) -> None:
        barrier.wait()
        try:
            results[position] = calls[position]()
        except (LifecycleError, RefundError) as exc:  # refused, or lost a race: both are fine
            results[position] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _command(engine: Engine, act: Callable[[ReturnService], object]) -> Callable[[], object]:
    def call() -> object:
        with unit_of_work(engine) as session:
            return act(ReturnService(session, POLICY, now=lambda: CLOCK))

    return call


def _create(engine: Engine, order_id: str, request: dict) -> Callable[[], object]:
    create = CreateReturn(
        channel="store" if request["store"] else "mail",
        order_id=order_id,
        location_id="S1",
        lines=tuple(
            LineRequest(order_line_no=n, quantity=q, reason=request["reason"]) for n, q in request["lines"]
        ),
        receive_now=request["store"],
        refund_now=request["store"] and request["refund_now"],
    )
    return _command(engine, lambda service: service.create(create, "till").return_id)


def _assert_within_what_was_bought_and_paid(engine: Engine, order_id: str) -> None:
    with unit_of_work(engine, write=False) as session:
        bought = {
            line.line_no: line.quantity
            for line in session.execute(select(OrderLine).where(OrderLine.order_id == order_id)).scalars()
        }
        received: dict[int, int] = defaultdict(int)
        for line in session.execute(select(ReturnLine).where(ReturnLine.order_id == order_id)).scalars():
            received[line.order_line_no] += line.received_quantity or 0
        refunded: dict[str, Decimal] = defaultdict(Decimal)
        for payment_id, amount in session.execute(
            select(RefundAllocation.payment_id, RefundAllocation.amount)
            .join(Payment, Payment.payment_id == RefundAllocation.payment_id)
            .where(Payment.order_id == order_id)
        ):
            refunded[payment_id] += Decimal(str(amount))
        paid = {
            p.payment_id: p.amount
            for p in session.execute(select(Payment).where(Payment.order_id == order_id)).scalars()
        }
        found = violations(session.connection())
    for line_no, units in received.items():
        assert units <= bought[line_no], f"line {line_no}: {units} units received of {bought[line_no]} bought"
    for payment_id, amount in refunded.items():
        assert amount <= paid[payment_id] + Decimal("0.005"), (
            f"{payment_id}: {amount} refunded of {paid[payment_id]}"
        )
    assert [v for v in found if order_id in v.where] == []


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Engine:
    load_lifecycle_world(engine, tmp_path / "world")
    return engine


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_overlapping_returns_sent_together_stay_within_bought_and_paid(
    world: Engine, data: st.DataObject
) -> None:
    order = data.draw(orders(), label="order")
    order_id = _add_order(world, order)
    mix = data.draw(request_mixes(order), label="requests")
    created = _all_at_once([_create(world, order_id, request) for request in mix])
    return_ids = [r for r in created if isinstance(r, str)]
    assert return_ids, created  # the first of them always fits
    with unit_of_work(world, write=False) as session:
        status = dict(
            session.execute(
                select(Return.return_id, Return.status).where(Return.return_id.in_(return_ids))
            ).all()
        )
    # then, at the same time: the mail returns arrive, and everything received is refunded (each twice)
    later: list[Callable[[], object]] = []
    for return_id in return_ids:
        if status[return_id] == "authorized":
            later.append(_command(world, lambda s, r=return_id: (s.receive(r, "dc"), s.refund(r, "dc"))))
        later += [_command(world, lambda s, r=return_id: s.refund(r, "dc")) for _ in range(2)]
    _all_at_once(later)
    _assert_within_what_was_bought_and_paid(world, order_id)


def test_two_till_refunds_of_one_unit_at_once_refund_it_once(world: Engine) -> None:
    """One unit at 36.99 paid 20.00 by gift card and 16.99 by card, returned at two tills at once."""
    order_id = _add_order(
        world,
        {
            "lines": [(1, "HOODIE-M", 1, 3699, 0)],
            "shipping": 0,
            "payments": [("gift_card", 2000), ("card", 1699)],
        },
    )
    request = {"lines": [(1, 1)], "store": True, "refund_now": True, "reason": "changed_mind"}
    for _ in range(3):
        results = _all_at_once([_create(world, order_id, request) for _ in range(2)])
        assert sum(isinstance(r, str) for r in results) <= 1, results
    _assert_within_what_was_bought_and_paid(world, order_id)
    with unit_of_work(world, write=False) as session:
        refunded = (
            session.execute(
                select(RefundAllocation.amount)
                .join(Payment, Payment.payment_id == RefundAllocation.payment_id)
                .where(Payment.order_id == order_id)
            )
            .scalars()
            .all()
        )
    assert sum(Decimal(str(a)) for a in refunded) == Decimal("36.99")
