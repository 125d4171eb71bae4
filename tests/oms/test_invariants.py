"""The invariant check finds each kind of excess (units, line money, tender, order) and nothing else."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine

from oms.invariants import violations
from oms.lifecycle import CreateReturn, LineRequest, ReturnService
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from oms.tables import Refund, RefundAllocation, Return, ReturnLine
from oms.uow import unit_of_work
from tests.factories import NOW, load_lifecycle_world

CLOCK = dt.datetime.fromisoformat(NOW.replace("Z", "+00:00"))
pytestmark = pytest.mark.violates_invariants  # the tests plant violations on purpose


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Engine:
    load_lifecycle_world(engine, tmp_path / "world")
    with unit_of_work(engine) as session:
        service = ReturnService(session, load_policy(DEFAULT_POLICY_PATH), now=lambda: CLOCK)
        created = service.create(
            CreateReturn(
                channel="store",
                order_id="W-1001",
                location_id="S1",
                lines=(LineRequest(order_line_no=3, quantity=3, reason="defective"),),
                receive_now=True,
                refund_now=True,
            ),
            "till",
        )
        assert created.status == "received"
    return engine


def _plant(engine: Engine, *rows) -> None:
    with unit_of_work(engine) as session:
        for row in rows:
            session.add(row)
            session.flush()


def _return(return_id: str, order_id: str = "W-1001") -> Return:
    return Return(
        return_id=return_id,
        order_id=order_id,
        channel="mail",
        requested_at=CLOCK,
        status="received",
        version=1,
    )


def test_a_lawful_history_has_no_violation(world: Engine) -> None:
    with world.connect() as connection:
        assert violations(connection) == []


def test_units_beyond_what_was_bought(world: Engine) -> None:
    # W-1001 line 2 sold 2 tees: an imported return of 3 (received, no received quantity recorded)
    _plant(
        world,
        _return("X1"),
        ReturnLine(
            return_id="X1",
            line_no=1,
            order_id="W-1001",
            order_line_no=2,
            sku="TEE-M",
            quantity=3,
            reason="other",
        ),
    )
    with world.connect() as connection:
        found = violations(connection)
    assert [(v.kind, v.where, v.limit, v.actual) for v in found] == [
        ("line_units", "order W-1001 line 2", "2", "3")
    ]
    assert str(found[0]) == "order W-1001 line 2: units returned or in open returns 3, more than the 2 bought"


def test_money_beyond_what_was_paid_per_line_tender_and_order(world: Engine) -> None:
    # line 1 (earbuds) was paid 103.20; the card 128.15; the order 178.15
    _plant(
        world,
        _return("X2"),
        ReturnLine(
            return_id="X2",
            line_no=1,
            order_id="W-1001",
            order_line_no=1,
            sku="EARBUDS",
            quantity=1,
            reason="other",
            received_quantity=1,
            refund_amount=Decimal("150.00"),
        ),
        Refund(
            refund_id="RF-X2",
            return_id="X2",
            created_at=CLOCK,
            method="original_tender",
            merchandise_amount=Decimal("150.00"),
            amount=Decimal("150.00"),
        ),
        RefundAllocation(
            refund_id="RF-X2", payment_id="W-1001-CARD", method="card", amount=Decimal("150.00")
        ),
    )
    with world.connect() as connection:
        found = {v.kind: v for v in violations(connection)}
    assert set(found) == {"line_refund", "tender_refund", "order_refund"}
    assert (found["line_refund"].limit, found["line_refund"].actual) == ("103.20", "150.00")
    assert found["tender_refund"].where == "payment W-1001-CARD of order W-1001"
    assert (found["tender_refund"].limit, found["tender_refund"].actual) == ("128.15", "150.00")
    assert found["order_refund"].limit == "178.15"
    assert Decimal(found["order_refund"].actual) >= Decimal("150.00") + Decimal("30.00")  # and the mugs
