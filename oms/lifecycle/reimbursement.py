"""The refund: what was received, split over the order's original tenders (never more than each paid),
shipping when the retailer is at fault, the restocking fee, loyalty clawback; held while an analyst's
fraud or abuse decision stands."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import func, select

from oms import context_reads, enums, refunds
from oms.driver import Driver
from oms.lifecycle.core import (
    CENT,
    CLOSED,
    ZERO,
    IllegalTransitionError,
    RefundHeldError,
    Stage,
    _tender_used,
    analyst_review,
)
from oms.tables import (
    Exchange,
    LoyaltyLedger,
    Order,
    OrderLine,
    Payment,
    Product,
    Refund,
    RefundAllocation,
    Return,
    ReturnLine,
)


class ReimbursementStage(Stage):
    """The refund."""

    def refund(self, return_id: str, actor: str) -> Refund:
        header = self.get(return_id, lock=True)
        if header.status not in ("received", "inspected"):
            raise IllegalTransitionError(
                f"return {return_id} is {header.status}; refunds are issued once it is received"
            )
        if header.refunded_at is not None:  # set with every refund (migration 0012 filled in the older)
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
