"""Request and response bodies of the HTTP API (pydantic), separate from the ORM tables."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oms import enums

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"  # no NUL or other control characters
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Units = Annotated[int, Field(ge=1, le=10_000)]
LineNo = Annotated[int, Field(ge=1, le=100_000)]
Channel = Literal["store", "web", "app", "mail"]
Reason = Literal[enums.RETURN_REASONS]  # type: ignore[valid-type]
Condition = Literal[enums.CONDITIONS]  # type: ignore[valid-type]
Disposition = Literal[enums.DISPOSITIONS]  # type: ignore[valid-type]
RefundMethod = Literal[enums.REFUND_METHODS]  # type: ignore[valid-type]
Outcome = Literal[enums.REVIEW_OUTCOMES]  # type: ignore[valid-type]
Note = Annotated[str, Field(max_length=2000, pattern=TEXT_PATTERN)]
Status = Literal[enums.RETURN_STATUSES]  # type: ignore[valid-type]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReturnLineIn(_Body):
    quantity: Units
    reason: Reason
    order_line_no: LineNo | None = Field(
        None, description="The order line returned (required when order_id is given)."
    )
    sku: Id | None = Field(
        None, description="Required for receiptless lines; checked against the order line otherwise."
    )
    condition: Condition | None = Field(
        None, description="Known at a store counter; otherwise set at inspection."
    )
    replacement_sku: Id | None = Field(None, description="For an exchange (refund_method 'exchange').")


class ReturnCreate(_Body):
    channel: Channel
    lines: Annotated[list[ReturnLineIn], Field(min_length=1, max_length=100)]
    order_id: Id | None = Field(None, description="Empty for a receiptless return.")
    customer_id: Id | None = None
    location_id: Id | None = Field(None, description="Where the return is (or will be) received.")
    employee_id: Id | None = None
    refund_method: RefundMethod = "original_tender"
    return_id: Id | None = Field(None, description="Your id for the return; generated when omitted.")
    receive_now: bool = Field(False, description="Store flow: requested, decided and received in one call.")
    refund_now: bool = Field(False, description="Store flow: also refund at the till (needs receive_now).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channel": "store",
                    "order_id": "O00012345",
                    "location_id": "S001",
                    "employee_id": "ES001-03",
                    "lines": [{"order_line_no": 1, "quantity": 1, "reason": "doesnt_fit"}],
                    "receive_now": True,
                }
            ]
        },
    )


class ReceiveLine(_Body):
    line_no: LineNo
    quantity: Annotated[int, Field(ge=0, le=10_000)]


class ReceiveIn(_Body):
    location_id: Id | None = Field(None, description="Where it arrived (default: the return's location).")
    lines: Annotated[list[ReceiveLine], Field(max_length=100)] | None = Field(
        None, description="Units received per line (default: everything requested)."
    )


class InspectLine(_Body):
    line_no: LineNo
    condition: Condition


class InspectIn(_Body):
    lines: Annotated[list[InspectLine], Field(min_length=1, max_length=100)]


class DisposeLine(_Body):
    line_no: LineNo
    disposition: Disposition | None = Field(None, description="Omit to let the disposition chooser pick.")


class DisposeIn(_Body):
    lines: Annotated[list[DisposeLine], Field(max_length=100)] | None = Field(
        None, description="Omit to route every waiting line with the chooser."
    )


class CancelIn(_Body):
    reason: Note | None = None


class EmptyIn(_Body):
    pass


class PaymentIn(_Body):
    amount: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] = Field(
        description="What the till collected: exactly the return's amount_due."
    )
    method: Literal[enums.PAYMENT_METHODS]  # type: ignore[valid-type]
    reference: Note | None = Field(None, description="The till's receipt or card authorisation.")


class StockCountIn(_Body):
    sellable: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        description="Sellable units counted at the location; the ledger is set to it."
    )


class DecisionIn(_Body):
    outcome: Outcome
    action: Literal["authorize", "reject"] | None = Field(
        None, description="For a return pending review; default: authorize if legitimate, else reject."
    )
    fraud_type: Literal[enums.FRAUD_TYPES] | None = Field(  # type: ignore[valid-type]
        None, description="Required for fraud and abuse: what happened."
    )
    note: Note | None = None


class ReasonOut(BaseModel):
    code: str
    message: str
    severity: str


class ReturnLineOut(BaseModel):
    line_no: int
    order_line_no: int | None
    sku: str
    quantity: int
    reason: str
    received_quantity: int | None
    condition: str | None
    disposition: str | None
    refund_amount: Decimal | None
    replacement_sku: str | None


class EventOut(BaseModel):
    seq: int
    at: dt.datetime
    actor: str
    kind: str
    from_status: str | None
    to_status: str | None
    payload: dict[str, Any]


class AllocationOut(BaseModel):
    payment_id: str | None
    method: str
    amount: Decimal


class RefundOut(BaseModel):
    refund_id: str
    created_at: dt.datetime
    method: str
    merchandise_amount: Decimal
    shipping_amount: Decimal
    restocking_fee: Decimal
    amount: Decimal
    allocations: list[AllocationOut]


class ExchangeOut(BaseModel):
    line_no: int
    replacement_sku: str
    even: bool
    price_difference: Decimal


class ReviewDecisionOut(BaseModel):
    outcome: str
    fraud_type: str | None
    source: str | None = Field(description="Where the flag came from: model_flag, rule_flag, random_audit.")
    reviewer: str | None
    reviewed_at: dt.datetime
    note: str | None


class ReturnSummary(BaseModel):
    return_id: str
    rma_number: str | None
    order_id: str | None
    customer_id: str | None
    channel: str
    location_id: str | None
    status: str
    requested_at: dt.datetime
    received_at: dt.datetime | None
    decision: str | None


class ReturnOut(ReturnSummary):
    employee_id: str | None
    refund_method: str | None
    version: int
    score: float | None = Field(None, description="The fraud score at creation (empty if none was computed).")
    model_version: str | None = None
    degraded: bool | None = Field(None, description="True if the creation decision had no model behind it.")
    reasons: list[ReasonOut]
    lines: list[ReturnLineOut]
    refunds: list[RefundOut]
    exchanges: list[ExchangeOut]
    review: ReviewDecisionOut | None = Field(
        None, description="The analyst's decision on this return (fraud, abuse or legitimate), if any."
    )
    amount_due: Decimal = Field(
        Decimal("0.00"),
        description="What the customer owes for exchanges dearer than what they returned (status "
        "awaiting_payment until it is paid: POST /v1/returns/{id}/payment).",
    )
    timeline: list[EventOut]


class ReviewOut(BaseModel):
    return_id: str
    outcome: str
    reviewer: str | None
    reviewed_at: dt.datetime
    status: str


class LimboOut(BaseModel):
    return_id: str
    line_no: int
    location_id: str
    sku: str
    quantity: int
    received_at: dt.datetime
    age_days: float


class StockOut(BaseModel):
    location_id: str
    sku: str
    buckets: dict[str, int]


class ErrorOut(BaseModel):
    error: dict[str, str]


class ScoreReason(BaseModel):
    code: str
    message: str
    severity: str


class ModelReason(BaseModel):
    feature: str
    value: float | None
    typical: float | None
    contribution: float
    direction: str = Field(default="up", description="up: raises the risk; down: lowers it.")
    text: str


class LineEstimateOut(BaseModel):
    line_no: int
    sku: str | None
    condition_assumed: str = Field(
        description="The condition the estimates assume (given at the counter, else new)."
    )
    recommended_disposition: str | None
    recovery_estimate: float | None = Field(
        description="Expected net value of the recommended outlet for the line."
    )
    refund_estimate: float | None = Field(
        description="Price paid for the units, less any restocking fee (before shipping)."
    )


class ScoreOut(BaseModel):
    decision: str = Field(
        description="approve, review or deny: hard policy violations first, then the fraud score."
    )
    score: float | None = Field(
        description="Calibrated probability that the return is fraud or abuse (empty when degraded)."
    )
    band: str | None
    degraded: bool = Field(
        description="True when no model could be used: the decision is the policy rules' alone."
    )
    model_version: str | None = Field(
        description='The fraud model version that scored, or "rules" when no model is champion yet.'
    )
    serving_because: str | None = Field(
        default=None, description="Why the rules scorer serves (no model champion yet), when it does."
    )
    reasons: list[ScoreReason]
    model_reasons: list[ModelReason] = Field(
        description="What raises the risk (review or deny); for an approved return, only with explain_approved."
    )
    approved_reasons: list[ModelReason] = Field(default_factory=list, exclude=True)
    lines: list[LineEstimateOut]
    latency_ms: float

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "decision": "review",
                    "score": 0.71,
                    "band": "high",
                    "degraded": False,
                    "model_version": "3",
                    "reasons": [
                        {
                            "code": "fraud_score",
                            "message": "fraud score 0.71: Raises the risk: 6 returns by the customer in the last 30 days (typical of store returns of apparel: 0)",
                            "severity": "review",
                        }
                    ],
                    "model_reasons": [
                        {
                            "feature": "cust_returns_30d",
                            "value": 6,
                            "typical": 0,
                            "contribution": 1.2,
                            "direction": "up",
                            "text": "Raises the risk: 6 returns by the customer in the last 30 days (typical of store returns of apparel: 0)",
                        }
                    ],
                    "lines": [
                        {
                            "line_no": 1,
                            "sku": "ST00042-M-black",
                            "condition_assumed": "new",
                            "recommended_disposition": "restock",
                            "recovery_estimate": 31.5,
                            "refund_estimate": 39.99,
                        }
                    ],
                    "latency_ms": 4.2,
                }
            ]
        }
    )
