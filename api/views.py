"""Read models of the API: a return with its lines, refunds, exchanges and timeline."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.schemas import (
    AllocationOut,
    EventOut,
    ExchangeOut,
    ReasonOut,
    RefundOut,
    ReturnLineOut,
    ReturnOut,
    ReturnSummary,
    ReviewDecisionOut,
)
from oms.lifecycle import NotFoundError, amount_due, analyst_review, timeline
from oms.tables import Exchange, Refund, RefundAllocation, Return, ReturnLine


def summary(header: Return) -> ReturnSummary:
    return ReturnSummary(
        return_id=header.return_id,
        rma_number=header.rma_number,
        order_id=header.order_id,
        customer_id=header.customer_id,
        channel=header.channel,
        location_id=header.location_id,
        status=header.status,
        requested_at=header.requested_at,
        received_at=header.received_at,
        decision=header.decision,
    )


def return_view(session: Session, return_id: str) -> ReturnOut:
    header = session.get(Return, return_id)
    if header is None:
        raise NotFoundError(f"return {return_id!r} does not exist")
    lines = session.execute(
        select(ReturnLine).where(ReturnLine.return_id == return_id).order_by(ReturnLine.line_no)
    ).scalars()
    refunds = (
        session.execute(select(Refund).where(Refund.return_id == return_id).order_by(Refund.created_at))
        .scalars()
        .all()
    )
    allocations = (
        session.execute(
            select(RefundAllocation)
            .where(RefundAllocation.refund_id.in_([r.refund_id for r in refunds]))
            .order_by(RefundAllocation.allocation_id)
        )
        .scalars()
        .all()
    )
    exchanges = session.execute(
        select(Exchange).where(Exchange.return_id == return_id).order_by(Exchange.line_no)
    ).scalars()
    events = list(timeline(session, return_id))
    decided = next(
        (
            e.payload
            for e in events
            if e.kind in ("authorize", "held_for_review", "reject") and "decision" in e.payload
        ),
        {},
    )
    return ReturnOut(
        **summary(header).model_dump(),
        employee_id=header.employee_id,
        refund_method=header.refund_method,
        version=header.version,
        score=decided.get("score"),
        model_version=decided.get("model_version"),
        degraded=decided.get("degraded"),
        reasons=[ReasonOut(**r) for r in (header.decision_reasons or [])],
        lines=[
            ReturnLineOut(
                line_no=line.line_no,
                order_line_no=line.order_line_no,
                sku=line.sku,
                quantity=line.quantity,
                reason=line.reason,
                received_quantity=line.received_quantity,
                condition=line.condition,
                disposition=line.disposition,
                refund_amount=line.refund_amount,
                replacement_sku=line.replacement_sku,
            )
            for line in lines
        ],
        refunds=[
            RefundOut(
                refund_id=r.refund_id,
                created_at=r.created_at,
                method=r.method,
                merchandise_amount=r.merchandise_amount,
                shipping_amount=r.shipping_amount,
                restocking_fee=r.restocking_fee,
                amount=r.amount,
                allocations=[
                    AllocationOut(payment_id=a.payment_id, method=a.method, amount=a.amount)
                    for a in allocations
                    if a.refund_id == r.refund_id
                ],
            )
            for r in refunds
        ],
        amount_due=amount_due(session, return_id),
        review=_analyst_review(session, return_id),
        exchanges=[
            ExchangeOut(
                line_no=e.line_no,
                replacement_sku=e.replacement_sku,
                even=e.even,
                price_difference=e.price_difference,
            )
            for e in exchanges
        ],
        timeline=[
            EventOut(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                kind=e.kind,
                from_status=e.from_status,
                to_status=e.to_status,
                payload=e.payload,
            )
            for e in events
        ],
    )


def _analyst_review(session: Session, return_id: str) -> ReviewDecisionOut | None:
    review = analyst_review(session, return_id)
    if review is None:
        return None
    return ReviewDecisionOut(
        outcome=review.outcome,
        fraud_type=review.fraud_type,
        source=review.source,
        reviewer=review.reviewer,
        reviewed_at=review.reviewed_at,
        note=review.note,
    )
