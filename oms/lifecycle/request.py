"""A return asked for: validated against the order, assessed by the policy and the scorer, then authorised,
held for review or rejected; an analyst's decision on it; cancelled or expired while it waits."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from oms import context_reads, enums
from oms.context_reads import ContextRows, OrderedLine, ProductRef
from oms.driver import Driver, Statement
from oms.lifecycle.core import (
    ZERO,
    Assessment,
    ConflictError,
    CreateReturn,
    IllegalTransitionError,
    InvalidRequestError,
    LineRequest,
    Reason,
    RequestContext,
    Stage,
    UnknownReferenceError,
    _paid_per_unit,
    analyst_review,
)
from oms.tables import (
    FraudReview,
    Return,
    ReturnLine,
)


class RequestStage(Stage):
    """A return asked for."""

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

    def _authorize(self, header: Return, actor: str, payload: dict[str, Any]) -> None:
        header.rma_number = header.rma_number or f"RMA-{secrets.token_hex(4).upper()}"
        self._move(header, "authorize", actor, {**payload, "rma_number": header.rma_number})
        self._notify(header, "return_authorized", {"rma_number": header.rma_number})

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
